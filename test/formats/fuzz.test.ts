// Fuzz: corrupted safetensors / GGUF files (truncations, flipped header bytes, huge lengths, bad offsets) must
// always end in an Error naming the file, never a crash, hang or a giant allocation.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseSafetensors } from '../../src/formats/safetensors.js';
import { ggufTensor, ggufToLlamaConfig, parseGguf } from '../../src/formats/gguf.js';
import { hfToGguf } from '../../src/formats/gguf-writer.js';
import { loadModel } from '../../src/formats/load.js';
import { makeTinyHf, rng, tmpDir } from './fixtures.js';

const BUDGET_MS = Number(process.env.FLOE_FUZZ_MS ?? 1200); // raise locally for a longer hunt

type Mutator = (b: Uint8Array, headerEnd: number, r: () => number) => Uint8Array;

const pick = (r: () => number, n: number) => Math.floor(r() * n);

const MUTATORS: Record<string, Mutator> = {
  truncate: (b, _h, r) => b.subarray(0, pick(r, b.length)),
  flipHeaderBytes: (b, h, r) => {
    const c = b.slice();
    for (let k = 1 + pick(r, 4); k > 0; k--) c[pick(r, h)] ^= 1 << pick(r, 8);
    return c;
  },
  randomHeaderBytes: (b, h, r) => {
    const c = b.slice();
    for (let k = 1 + pick(r, 8); k > 0; k--) c[pick(r, h)] = pick(r, 256);
    return c;
  },
  hugeU64: (b, h, r) => {
    // A huge little-endian u64 at a random 8-byte-aligned or arbitrary spot in the header (lengths, counts, dims, offsets).
    const c = b.slice();
    const at = r() < 0.5 ? pick(r, Math.max(1, (h - 8) >> 3)) * 8 : pick(r, Math.max(1, h - 8));
    const dv = new DataView(c.buffer);
    const v = [0xffffffffffffffffn, 2n ** 53n, 2n ** 40n + BigInt(pick(r, 1000)), BigInt(b.length + pick(r, 64)), 2n ** 31n][pick(r, 5)]!;
    if (at + 8 <= c.length) dv.setBigUint64(at, v, true);
    return c;
  },
  smallU32: (b, h, r) => {
    // Off-by-a-bit counts, dims, types and offsets.
    const c = b.slice();
    const at = pick(r, Math.max(1, h - 4));
    const dv = new DataView(c.buffer);
    if (at + 4 <= c.length) dv.setUint32(at, dv.getUint32(at, true) + [1, -1, 32, 7, 1 << 20][pick(r, 5)]!, true);
    return c;
  },
};

function mustNameFile(file: string, what: string, fn: () => void): 'ok' | 'error' {
  try {
    fn();
    return 'ok';
  } catch (e) {
    if (!(e instanceof Error)) assert.fail(`${what}: threw a non-Error ${String(e)}`);
    if (!e.message.includes(file)) assert.fail(`${what}: error does not name the file: ${e.stack}`);
    return 'error';
  }
}

function fuzz(name: string, good: Uint8Array, headerEnd: number, file: string, parse: (b: Uint8Array) => void, seed: number): void {
  const r = rng(seed + Number(process.env.FLOE_FUZZ_SEED ?? 0));
  const keys = Object.keys(MUTATORS);
  const counts = { ok: 0, error: 0 };
  const t0 = performance.now();
  const mem0 = process.memoryUsage().arrayBuffers;
  let i = 0;
  for (; performance.now() - t0 < BUDGET_MS; i++) {
    const m = keys[i % keys.length]!;
    const bad = MUTATORS[m]!(good, headerEnd, r);
    counts[mustNameFile(file, `${name} #${i} ${m}`, () => parse(bad))]++;
    const grown = process.memoryUsage().arrayBuffers - mem0;
    if (grown > 512 * 2 ** 20) assert.fail(`${name} #${i} ${m}: ${grown} bytes of ArrayBuffers allocated`);
  }
  assert.ok(i > 50, `only ${i} cases ran`);
  assert.ok(counts.error > i / 4, `most corruptions should be caught (${counts.error}/${i})`);
}

test('fuzz safetensors: every corruption is accepted or rejected with an error naming the file', () => {
  const tiny = makeTinyHf({ seed: 31, dtype: 'BF16', layers: 1 });
  const good = new Uint8Array(fs.readFileSync(path.join(tiny.dir, 'model.safetensors')));
  const headerEnd = 8 + Number(new DataView(good.buffer, good.byteOffset).getBigUint64(0, true));
  const file = '/fuzz/model.safetensors';
  fuzz('safetensors', good, headerEnd, file, (b) => {
    const st = parseSafetensors(b, file);
    for (const t of st.tensors.values()) assert.equal(t.data.byteOffset + t.data.byteLength <= b.byteOffset + b.byteLength, true);
  }, 1);
});

test('fuzz GGUF: parse, config and tensor views fail only with errors naming the file', async () => {
  const tiny = makeTinyHf({ seed: 32, layers: 1 });
  const hf = await loadModel(tiny.dir);
  const src = path.join(tmpDir(), 'fuzz.gguf');
  await hfToGguf(hf, src, 'q8_0', { extraMetadata: {} });
  const good = new Uint8Array(fs.readFileSync(src));
  const headerEnd = parseGguf(good, src).dataOffset;
  const file = '/fuzz/model.gguf';
  fuzz('gguf', good, headerEnd, file, (b) => {
    const g = parseGguf(b, file);
    ggufToLlamaConfig(g);
    for (const info of g.tensors.values()) ggufTensor(g, info);
  }, 2);
});

test('fuzz through loadModel: corrupted files on disk give errors naming the path', async () => {
  const tiny = makeTinyHf({ seed: 33, layers: 1 });
  const hf = await loadModel(tiny.dir);
  const dir = tmpDir();
  const gg = path.join(dir, 'm.gguf');
  await hfToGguf(hf, gg, 'f16');
  const ggGood = new Uint8Array(fs.readFileSync(gg));
  const ggHeader = parseGguf(ggGood, gg).dataOffset;
  const stPath = path.join(tiny.dir, 'model.safetensors');
  const stGood = new Uint8Array(fs.readFileSync(stPath));
  const stHeader = 8 + Number(new DataView(stGood.buffer, stGood.byteOffset).getBigUint64(0, true));
  const r = rng(3);
  const keys = Object.keys(MUTATORS);
  const t0 = performance.now();
  let errors = 0, i = 0;
  for (; performance.now() - t0 < BUDGET_MS; i++) {
    const m = MUTATORS[keys[i % keys.length]!]!;
    const useGguf = i % 2 === 0;
    const [target, bytes] = useGguf ? [gg, m(ggGood, ggHeader, r)] : [stPath, m(stGood, stHeader, r)];
    fs.writeFileSync(target, bytes);
    try {
      (await loadModel(useGguf ? gg : tiny.dir)).dispose();
    } catch (e) {
      errors++;
      assert.ok(e instanceof Error && e.message.includes(useGguf ? gg : tiny.dir), `case ${i}: ${(e as Error).stack}`);
    }
  }
  assert.ok(i > 20 && errors > i / 4, `${errors}/${i} rejected`);
});
