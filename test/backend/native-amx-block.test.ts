// The tile kernels' alternative blockings against the defaults, for A/Bs on AMX hosts: the bf16 GEMM's 2 × 2
// (FLOE_AMX_GEMM_BLOCK=22, native/amx.inc kern22: two A and two B tiles in flight) against 2 × 3, and the int8 q8_0r16
// kernel's 4 groups per x block (FLOE_AMX_Q8_GROUPS=4, q8r_kern4) against one group by pairs of blocks. Every output
// takes the same products in the same order, so the results must be equal bit for bit (forward and training's dx,
// bf16 and fp8 with per-row and block scale grids; q8_0r16 at 4 to 31 rows). Run in child processes (the settings are
// read when the addon loads), on real tiles where the host has them, else emulated.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { describe, it } from 'node:test';
import { loadAddon } from '../../src/backend/native-addon.js';
import { BASE_SEED } from './helpers.js';
import { nodeScript } from '../repo.js';

const addon = loadAddon();
const skip = !addon || addon.supportedIsa() !== 'avx512' ? 'needs the AVX-512 native addon' : false;
const mode = addon?.amx().supported ? 'tiles' : 'emulate';

function run(block: string | undefined, seed: number, q8Groups?: string): { out: Record<string, string>; counters: Record<string, number> } {
  const env: NodeJS.ProcessEnv = { ...process.env, FLOE_AMX: mode, FLOE_ISA: 'avx512', FLOE_AMX_Q8_MIN_M: '4', FLOE_GEMV_TASKS: '1' };
  delete env.FLOE_AMX_GEMM_BLOCK;
  delete env.FLOE_AMX_Q8_GROUPS;
  if (block) env.FLOE_AMX_GEMM_BLOCK = block;
  if (q8Groups) env.FLOE_AMX_Q8_GROUPS = q8Groups;
  return JSON.parse(execFileSync(process.execPath, [...nodeScript('test/backend/amx-block-child.ts'), String(seed)], { env, encoding: 'utf8' }));
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

  it(`q8_0r16 on the int8 tiles, 4 groups per x block, equals the default bit for bit (seed ${BASE_SEED})`, () => {
    const base = run(undefined, BASE_SEED), g4 = run(undefined, BASE_SEED, '4');
    const path = mode === 'tiles' ? 'matmul.path.amx_int8.avx512' : 'matmul.path.amx_int8_emu.avx512';
    const groups = `matmul.amx_q8_groups.4.${mode === 'tiles' ? 'tiles' : 'emu'}`;
    for (const r of [base, g4]) assert.ok((r.counters[path] ?? 0) >= 5, `the int8 tile kernel ran (${path})`);
    assert.equal(base.counters[groups], undefined, 'the default does not take 4 groups');
    assert.ok((g4.counters[groups] ?? 0) > 0, `FLOE_AMX_Q8_GROUPS=4 took them (${groups})`);
    const q8 = (o: Record<string, string>) => Object.fromEntries(Object.entries(o).filter(([k]) => k.startsWith('q8_0r16')));
    assert.equal(Object.keys(q8(base.out)).length, 5);
    assert.deepEqual(q8(g4.out), q8(base.out));
  });
});
