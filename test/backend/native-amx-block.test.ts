// The tile GEMM's 2 × 2 blocking (FLOE_AMX_GEMM_BLOCK=22, native/amx.inc kern22: two A and two B tiles in flight)
// against the default 2 × 3 blocking: every output takes the same tile products in the same order, so the results
// must be equal bit for bit, forward and training's dx, bf16 and fp8 with per-row and block scale grids. Run in child
// processes (the setting is read when the addon loads), on real tiles where the host has them, else emulated.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';
import { loadAddon } from '../../src/backend/native-addon.js';
import { BASE_SEED } from './helpers.js';

const addon = loadAddon();
const skip = !addon || addon.supportedIsa() !== 'avx512' ? 'needs the AVX-512 native addon' : false;
const mode = addon?.amx().supported ? 'tiles' : 'emulate';
const child = fileURLToPath(new URL('./amx-block-child.ts', import.meta.url));

function run(block: string | undefined, seed: number): { out: Record<string, string>; counters: Record<string, number> } {
  const env: NodeJS.ProcessEnv = { ...process.env, FLOE_AMX: mode, FLOE_ISA: 'avx512' };
  delete env.FLOE_AMX_GEMM_BLOCK;
  if (block) env.FLOE_AMX_GEMM_BLOCK = block;
  return JSON.parse(execFileSync(process.execPath, ['--import', 'tsx', child, String(seed)], { env, encoding: 'utf8' }));
}

describe(`AMX tile GEMM blocking (${mode})`, { skip }, () => {
  it(`2 x 2 blocking equals the default bit for bit (seed ${BASE_SEED})`, () => {
    const base = run(undefined, BASE_SEED), b22 = run('22', BASE_SEED);
    const path = mode === 'tiles' ? 'matmul.path.amx_bf16.avx512' : 'matmul.path.amx_bf16_emu.avx512';
    const block = `matmul.amx_block.22.${mode === 'tiles' ? 'tiles' : 'emu'}`;
    for (const r of [base, b22]) assert.ok((r.counters[path] ?? 0) > 0, `the tile GEMM ran (${path})`);
    assert.equal(base.counters[block], undefined, 'the default does not take the 2 x 2 blocking');
    assert.ok((b22.counters[block] ?? 0) > 0, `FLOE_AMX_GEMM_BLOCK=22 took it (${block})`);
    assert.deepEqual(b22.out, base.out);
    // and the digests are of data: another seed changes them
    assert.notDeepEqual(run(undefined, BASE_SEED + 1).out, base.out);
  });
});
