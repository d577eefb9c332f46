// Fuzz: malformed model files (safetensors, GGUF, config.json, tokenizer.json, PEFT adapters) are loaded in child
// processes, so that a crash shows as a signal, a hang as a deadline and a giant allocation as peak RSS; each case
// must load or throw an Error naming the file, never a raw TypeError / RangeError. FLOE_SEED=N replays a run,
// FLOE_FUZZ_CASES=N changes how many random cases it makes (default 420; a fixed list of regressions runs too).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { rng, tmpDir } from './fixtures.js';
import type { LoraTarget, PeftLinear } from '../../src/formats/peft.js';

const HERE = fileURLToPath(import.meta.url);
const REPO = path.resolve(path.dirname(HERE), '../..');
const SEED = process.env.FLOE_SEED !== undefined ? Number(process.env.FLOE_SEED) >>> 0 : (Math.random() * 2 ** 32) >>> 0;
const CASES = Number(process.env.FLOE_FUZZ_CASES ?? 420);
const BATCHES = 4;
const BATCH_DEADLINE_MS = 120_000; // a hang, not a slow case: a healthy batch takes a few seconds
const MAX_RSS_BYTES = 1 << 30; // "allocates gigabytes": the fixtures are < 1 MB, a healthy child peaks near 200 MB

/** What a child writes per case (one JSON line), after a {"start": i} line. */
interface Outcome {
  readonly i: number;
  readonly target: string;
  readonly what: string;
  readonly file: string; // the corrupted file
  readonly dir: string; // the model / adapter directory or the .gguf
  readonly harmless: boolean; // the corruption cannot be detected (tensor data): the case must load
  readonly mustFail: boolean; // a regression case that must be refused
  readonly outcome: 'ok' | 'error';
  readonly name?: string;
  readonly message?: string;
  readonly maxRss: number; // bytes, the child's peak so far
}

// ---------------------------------------------------------------- corruptions

type R = () => number;
const pick = (r: R, n: number) => Math.floor(r() * n);
const choose = <T>(r: R, xs: readonly T[]): T => xs[pick(r, xs.length)]!;

const DEEP = '\u0000DEEP\u0000'; // replaced by a 20000-deep array after JSON.stringify (which would overflow on it)
const deepText = (s: string) => s.split(JSON.stringify(DEEP)).join('['.repeat(20000) + ']'.repeat(20000));

/** A value of a type a field does not expect. */
function wrongValue(r: R): unknown {
  return choose(r, [null, 'x', '', -1, 0, 1.5, 2 ** 53 + 2, 1e308, -1e308, true, false, [], {}, [null], { a: 1 }, [1, 2, 3], DEEP,
    'x'.repeat(5000), Array.from({ length: 3000 }, (_, i) => i)]);
}

/** Every (parent, key) in a JSON value, objects and arrays alike (arrays sampled: at most 8 entries each). */
function jsonSlots(v: unknown, r: R, out: [Record<string, unknown> | unknown[], string | number][] = [], depth = 0): typeof out {
  if (depth > 6 || v === null || typeof v !== 'object') return out;
  if (Array.isArray(v)) {
    for (let k = 0; k < Math.min(8, v.length); k++) {
      const i = pick(r, v.length);
      out.push([v, i]);
      jsonSlots(v[i], r, out, depth + 1);
    }
  } else {
    for (const [k, x] of Object.entries(v as Record<string, unknown>)) {
      out.push([v as Record<string, unknown>, k]);
      jsonSlots(x, r, out, depth + 1);
    }
  }
  return out;
}

const enc = (s: string) => new TextEncoder().encode(s);

/** A JSON file broken as a whole, or one field deleted or given a wrong type. */
function mutateJson(text: string, r: R, required: readonly string[] = []): { what: string; bytes: Uint8Array } {
  const k = pick(r, 10);
  if (k === 0) { const at = pick(r, text.length); return { what: `truncated at char ${at}`, bytes: enc(text.slice(0, at)) }; }
  if (k === 1) {
    const v = choose(r, ['null', '[]', '"text"', '42', '', '{', '{"a":', '\u00ff\u00fe', 'NaN', '{} {}']);
    return { what: `replaced by ${JSON.stringify(v)}`, bytes: v === '\u00ff\u00fe' ? new Uint8Array([0xff, 0xfe, 0x00, 0x7b]) : enc(v) };
  }
  if (k === 2) {
    const b = enc(text);
    const at = pick(r, b.length);
    b[at] = choose(r, [0x22, 0x7b, 0x7d, 0x5b, 0x5d, 0x2c, 0x3a, 0x00, 0xff]);
    return { what: `byte ${at} set to 0x${b[at]!.toString(16)}`, bytes: b };
  }
  const j = JSON.parse(text) as Record<string, unknown>;
  if (k === 3 && required.length > 0) {
    const key = choose(r, required);
    delete j[key];
    return { what: `"${key}" deleted`, bytes: enc(JSON.stringify(j)) };
  }
  if (k === 4 && required.length > 0) {
    const key = choose(r, required);
    const v = wrongValue(r);
    j[key] = v;
    return { what: `"${key}" set to ${short(v)}`, bytes: enc(deepText(JSON.stringify(j))) };
  }
  const slots = jsonSlots(j, r);
  const [parent, key] = choose(r, slots);
  if (k <= 6 && !Array.isArray(parent)) {
    delete (parent as Record<string, unknown>)[key];
    return { what: `field "${key}" deleted`, bytes: enc(JSON.stringify(j)) };
  }
  const v = wrongValue(r);
  (parent as Record<string | number, unknown>)[key] = v;
  return { what: `field ${JSON.stringify(key)} set to ${short(v)}`, bytes: enc(deepText(JSON.stringify(j))) };
}

function short(v: unknown): string {
  if (v === DEEP) return 'a 20000-deep array';
  const s = JSON.stringify(v);
  return s.length > 40 ? `${s.slice(0, 40)}... (${s.length} chars)` : s;
}

function truncate(b: Uint8Array, r: R, headerEnd: number): { what: string; bytes: Uint8Array } {
  const at = r() < 0.6 ? pick(r, headerEnd) : pick(r, b.length);
  return { what: `truncated to ${at} of ${b.length} bytes`, bytes: b.slice(0, at) };
}

function flip(b: Uint8Array, r: R, from: number, to: number): { what: string; bytes: Uint8Array } {
  const c = b.slice();
  const at: number[] = [];
  for (let k = 1 + pick(r, 4); k > 0; k--) { const i = from + pick(r, to - from); c[i] ^= 1 << pick(r, 8); at.push(i); }
  return { what: `bits flipped at bytes ${at.join(', ')}`, bytes: c };
}

/** safetensors: length field, header JSON and its fields, or (harmless) tensor data. */
function mutateSafetensors(b: Uint8Array, r: R): { what: string; bytes: Uint8Array; harmless?: boolean } {
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const n = Number(dv.getBigUint64(0, true));
  const text = new TextDecoder().decode(b.subarray(8, 8 + n));
  const data = b.subarray(8 + n);
  const build = (t: string, why: string) => {
    const hb = enc(t);
    const out = new Uint8Array(8 + hb.length + data.length);
    new DataView(out.buffer).setBigUint64(0, BigInt(hb.length), true);
    out.set(hb, 8);
    out.set(data, 8 + hb.length);
    return { what: why, bytes: out };
  };
  const k = pick(r, 9);
  if (k === 0) return truncate(b, r, 8 + n);
  if (k === 1) return flip(b, r, 0, 8 + n);
  if (k === 2) {
    const c = b.slice();
    const v = choose(r, [2n ** 64n - 1n, 2n ** 63n + BigInt(n), BigInt(b.length - 8 + 1 + pick(r, 100)), 0n, 1n, BigInt(n + 1 + pick(r, 7)), BigInt(n - 1 - pick(r, 7)), 2n ** 53n]);
    new DataView(c.buffer).setBigUint64(0, v, true);
    return { what: `header length ${n} set to ${v}`, bytes: c };
  }
  if (k === 3) {
    const s = choose(r, ['{"a": ', '[1, 2]', 'null', '{"x": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},}', text.replace(/"/g, "'")]);
    return build(s.padEnd(8, ' '), `header JSON replaced by ${short(s)}`);
  }
  if (k === 4) { const f = flip(b, r, 8 + n, b.length); return { what: `tensor data ${f.what}`, bytes: f.bytes, harmless: true }; }
  if (k === 5) {
    // data section start not 8-aligned: spaces after the JSON (the spec allows them), the same tensors
    const pad = 1 + pick(r, 7);
    return { what: `header padded with ${pad} more spaces (tensor data unaligned)`, bytes: build(text + ' '.repeat(pad), '').bytes, harmless: true };
  }
  const h = JSON.parse(text) as Record<string, Record<string, unknown>>;
  const names = Object.keys(h).filter((x) => x !== '__metadata__');
  const name = choose(r, names);
  const e = h[name]!;
  const offs = e.data_offsets as [number, number];
  const dataLen = data.length;
  let why: string;
  switch (pick(r, 12)) {
    case 0: e.dtype = choose(r, ['F99', 'f32', 'Q4_0', '', 'I64', 'U8', 'F64', 'F8_E5M2', 'BOOL', 'F16']); why = `"${name}" dtype set to ${e.dtype}`; break;
    case 1: e.dtype = wrongValue(r); why = `"${name}" dtype set to ${short(e.dtype)}`; break;
    case 2: {
      const s = [...(e.shape as number[])];
      const m = pick(r, 4);
      if (m === 0) s[0]! *= 2; else if (m === 1) s.pop(); else if (m === 2) s.push(1); else s.reverse();
      e.shape = s;
      why = `"${name}" shape set to [${s.join(', ')}]`;
      break;
    }
    case 3: {
      const s = [...(e.shape as unknown[])];
      if (r() < 0.5 || s.length === 0) e.shape = wrongValue(r); else { s[pick(r, s.length)] = wrongValue(r); e.shape = s; }
      why = `"${name}" shape set to ${short(e.shape)}`;
      break;
    }
    case 4: {
      // overlap: same length, moved back onto the tensor before it (or onto another tensor)
      const other = h[choose(r, names)]!.data_offsets as [number, number];
      const back = r() < 0.5 ? other[0] : Math.max(0, offs[0] - 1 - pick(r, 64));
      e.data_offsets = [back, back + offs[1] - offs[0]];
      why = `"${name}" data_offsets [${offs}] moved to [${e.data_offsets}]`;
      break;
    }
    case 5: {
      const v = choose(r, [[offs[0], dataLen + 1 + pick(r, 64)], [dataLen, dataLen + offs[1] - offs[0]], [offs[1], offs[0]], [2 ** 53 + 2, 2 ** 53 + 10], [1e300, 1e301]]);
      e.data_offsets = v;
      why = `"${name}" data_offsets set to ${short(v)}`;
      break;
    }
    case 6: {
      const v = r() < 0.5 ? wrongValue(r) : choose(r, [[offs[0]], [offs[0], offs[1], 0], [-4, offs[1]], [offs[0] + 0.5, offs[1]], [String(offs[0]), offs[1]]]);
      e.data_offsets = v;
      why = `"${name}" data_offsets set to ${short(v)}`;
      break;
    }
    case 7: { const v = wrongValue(r); (h as Record<string, unknown>)[name] = v; why = `entry "${name}" set to ${short(v)}`; break; }
    case 8: {
      const v = r() < 0.5 ? wrongValue(r) : { format: DEEP };
      (h as Record<string, unknown>).__metadata__ = v;
      why = `__metadata__ set to ${short(v)}`;
      break;
    }
    case 9: delete h[name]; why = `tensor "${name}" removed`; break;
    case 10: {
      const to = choose(r, ['model.layers.7.mlp.up_proj.weight', '', '__proto__', 'x'.repeat(3000), 'model.embed_tokens.weight']);
      delete h[name];
      h[to] = e;
      why = `tensor "${name}" renamed to ${short(to)}`;
      break;
    }
    default: {
      // the same name twice (JSON.parse keeps the last)
      const t = JSON.stringify(h);
      return build(`{${JSON.stringify(name)}:${JSON.stringify(e)},${t.slice(1)}`, `tensor "${name}" listed twice`);
    }
  }
  return build(deepText(JSON.stringify(h)), why);
}

/** The byte position of each GGUF header field, by an independent walk of the layout (gguf.ts is not used). */
interface GgufField { readonly kind: string; readonly at: number; readonly size: 4 | 8; readonly owner: string } // owner: the key or tensor
function ggufFields(b: Uint8Array): { fields: GgufField[]; headerEnd: number; dataStart: number } {
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const fields: GgufField[] = [];
  let p = 8;
  let owner = '';
  const u32 = (kind: string) => { fields.push({ kind, at: p, size: 4, owner }); const v = dv.getUint32(p, true); p += 4; return v; };
  const u64 = (kind: string) => { fields.push({ kind, at: p, size: 8, owner }); const v = Number(dv.getBigUint64(p, true)); p += 8; return v; };
  const str = (kind: string) => { const n = u64(kind); const s = new TextDecoder().decode(b.subarray(p, p + n)); p += n; return s; };
  const SIZE: Record<number, number> = { 0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8 };
  const value = (t: number): unknown => {
    if (t === 8) return str('string length');
    if (t === 9) {
      const it = u32('array item type');
      const n = u64('array count');
      for (let i = 0; i < n; i++) value(it);
      return null;
    }
    const v = t === 4 ? dv.getUint32(p, true) : null; // u32: general.alignment
    p += SIZE[t]!;
    return v;
  };
  const nT = u64('tensor count');
  const nKv = u64('metadata count');
  let alignment = 32;
  for (let i = 0; i < nKv; i++) {
    const key = str('key length');
    owner = key;
    const v = value(u32('value type'));
    if (key === 'general.alignment') alignment = v as number;
  }
  for (let i = 0; i < nT; i++) {
    owner = str('tensor name length');
    const nd = u32('n_dims');
    for (let d = 0; d < nd; d++) u64('dim');
    u32('ggml type');
    u64('tensor offset');
  }
  return { fields, headerEnd: p, dataStart: Math.ceil(p / alignment) * alignment };
}

function mutateGguf(b: Uint8Array, r: R): { what: string; bytes: Uint8Array; harmless?: boolean } {
  const { fields, headerEnd, dataStart } = ggufFields(b);
  const k = pick(r, 8);
  if (k === 0) return truncate(b, r, headerEnd);
  if (k === 1) return flip(b, r, 0, headerEnd);
  if (k === 2) { const f = flip(b, r, dataStart, b.length); return { what: `tensor data ${f.what}`, bytes: f.bytes, harmless: true }; }
  const kinds = k === 3 ? ['string length', 'key length', 'tensor name length'] : k === 4 ? ['array count', 'tensor count', 'metadata count']
    : k === 5 ? ['value type', 'array item type', 'ggml type', 'n_dims'] : k === 6 ? ['tensor offset'] : ['dim'];
  const f = choose(r, fields.filter((x) => kinds.includes(x.kind)));
  const c = b.slice();
  const dv = new DataView(c.buffer);
  const old = f.size === 8 ? dv.getBigUint64(f.at, true) : BigInt(dv.getUint32(f.at, true));
  let v: bigint;
  if (f.kind === 'tensor offset') {
    const offsets = fields.filter((x) => x.kind === 'tensor offset').map((x) => dv.getBigUint64(x.at, true));
    v = choose(r, [old + BigInt(1 + pick(r, 31)), BigInt(b.length), BigInt(b.length - dataStart), 2n ** 63n, 2n ** 64n - 32n, choose(r, offsets), old + 32n]);
  } else if (f.size === 8) {
    v = choose(r, [2n ** 64n - 1n, 2n ** 63n, 2n ** 53n, 2n ** 40n, BigInt(b.length), BigInt(b.length - f.at), old + 1n, old === 0n ? 1n : old - 1n, 0n]);
  } else {
    v = choose(r, [13n, 99n, 2n ** 32n - 1n, 2n ** 31n, 2n, 5n, 31n, 40n, old + 1n]);
  }
  if (f.size === 8) dv.setBigUint64(f.at, v, true); else dv.setUint32(f.at, Number(v), true);
  return { what: `${f.kind} at byte ${f.at} set from ${old} to ${v}`, bytes: c };
}

// ---------------------------------------------------------------- targets

interface Target {
  readonly name: string;
  readonly src: string; // fixture file, relative to the fixture root
  readonly run: 'load' | 'open' | 'peft';
  mutate(b: Uint8Array, r: R): { what: string; bytes: Uint8Array; harmless?: boolean };
}

const CONFIG_KEYS = ['hidden_size', 'num_attention_heads', 'num_key_value_heads', 'head_dim', 'intermediate_size', 'num_hidden_layers',
  'vocab_size', 'rms_norm_eps', 'rope_theta', 'rope_scaling', 'max_position_embeddings', 'tie_word_embeddings', 'eos_token_id',
  'bos_token_id', 'architectures', 'model_type', 'hidden_act', 'quantization_config'];
const TOKENIZER_KEYS = ['model', 'added_tokens', 'normalizer', 'pre_tokenizer', 'post_processor', 'decoder'];
const ADAPTER_KEYS = ['r', 'lora_alpha', 'target_modules', 'peft_type', 'task_type', 'use_rslora', 'bias', 'rank_pattern', 'modules_to_save', 'lora_dropout'];
const text = (b: Uint8Array) => new TextDecoder().decode(b);

const TARGETS: readonly Target[] = [
  { name: 'safetensors', src: 'hf/model.safetensors', run: 'load', mutate: mutateSafetensors },
  { name: 'gguf (floe)', src: 'floe.gguf', run: 'open', mutate: mutateGguf },
  { name: 'gguf (gguf-py)', src: 'gguf-py.gguf', run: 'open', mutate: mutateGguf },
  { name: 'config.json', src: 'hf/config.json', run: 'load', mutate: (b, r) => mutateJson(text(b), r, CONFIG_KEYS) },
  { name: 'tokenizer.json', src: 'hf/tokenizer.json', run: 'open', mutate: (b, r) => {
    // the fields the tokenizer library reads first, besides any field anywhere
    if (r() < 0.3) {
      const j = JSON.parse(text(b)) as { model: Record<string, unknown> };
      const key = choose(r, ['type', 'vocab', 'merges', 'unk_token']);
      const v = key === 'type' ? choose(r, ['Bogus', 'WordPiece', 'Unigram', 'WordLevel', 5]) : wrongValue(r);
      j.model[key] = v;
      return { what: `model.${key} set to ${short(v)}`, bytes: enc(deepText(JSON.stringify(j))) };
    }
    return mutateJson(text(b), r, TOKENIZER_KEYS);
  } },
  { name: 'adapter_config.json', src: 'adapter/adapter_config.json', run: 'peft', mutate: (b, r) => mutateJson(text(b), r, ADAPTER_KEYS) },
  { name: 'adapter_model.safetensors', src: 'adapter/adapter_model.safetensors', run: 'peft', mutate: mutateSafetensors },
];

const jsonEdit = (b: Uint8Array, edit: (j: Record<string, unknown>) => void) => {
  const j = JSON.parse(text(b)) as Record<string, unknown>;
  edit(j);
  return enc(deepText(JSON.stringify(j)));
};
/** A safetensors file with its header JSON edited (data offsets are relative to the data, so they stay valid). */
const stEdit = (b: Uint8Array, edit: (h: Record<string, Record<string, unknown>>) => void) => {
  const n = Number(new DataView(b.buffer, b.byteOffset).getBigUint64(0, true));
  const h = JSON.parse(text(b.subarray(8, 8 + n))) as Record<string, Record<string, unknown>>;
  edit(h);
  const hb = enc(deepText(JSON.stringify(h)));
  const out = new Uint8Array(8 + hb.length + b.length - 8 - n);
  new DataView(out.buffer).setBigUint64(0, BigInt(hb.length), true);
  out.set(hb, 8);
  out.set(b.subarray(8 + n), 8 + hb.length);
  return out;
};
const replaceBytes = (b: Uint8Array, from: string, to: string) => {
  const at = Buffer.from(b).indexOf(from, 0, 'latin1');
  assert.ok(at >= 0 && from.length === to.length, `fixture has no ${from}`);
  const c = b.slice();
  c.set(enc(to), at);
  return c;
};
const firstTensor = (h: Record<string, unknown>) => Object.keys(h).find((k) => k !== '__metadata__')!;

/** Corruptions that once crashed a loader or gave an imprecise error: run in every batch (mmap and read), each refused. */
const REGRESSIONS: readonly { readonly target: string; readonly what: string; mutate(b: Uint8Array): Uint8Array }[] = [
  { target: 'config.json', what: '"architectures" a 20000-deep array (was a RangeError: Maximum call stack, from the message)', mutate: (b) => jsonEdit(b, (j) => { j.architectures = DEEP; }) },
  { target: 'safetensors', what: 'a shape 20000 deep (was a RangeError from the message)', mutate: (b) => stEdit(b, (h) => { h[firstTensor(h)]!.shape = DEEP; }) },
  { target: 'safetensors', what: '__metadata__ value 20000 deep (was a RangeError)', mutate: (b) => stEdit(b, (h) => { h.__metadata__ = { format: DEEP } as never; }) },
  { target: 'adapter_config.json', what: 'null (was TypeError: Cannot read properties of null)', mutate: () => enc('null') },
  { target: 'adapter_config.json', what: '42 (was read as PEFT defaults; the error named the weights, r=8)', mutate: () => enc('42') },
  { target: 'adapter_config.json', what: '"r" deleted (the error named only the weights file)', mutate: (b) => jsonEdit(b, (j) => { delete j.r; }) },
  { target: 'adapter_config.json', what: '"lora_dropout" 1.5 (was a RangeError naming no file)', mutate: (b) => jsonEdit(b, (j) => { j.lora_dropout = 1.5; }) },
  { target: 'adapter_config.json', what: '"lora_alpha" -1 (was a RangeError naming no file)', mutate: (b) => jsonEdit(b, (j) => { j.lora_alpha = -1; }) },
  { target: 'adapter_config.json', what: '"peft_type" a 5000-char string (was a 5000-char message)', mutate: (b) => jsonEdit(b, (j) => { j.peft_type = 'x'.repeat(5000); }) },
  { target: 'adapter_model.safetensors', what: 'a tensor renamed to 3000 chars (was a 3000-char message)', mutate: (b) => stEdit(b, (h) => { const k = firstTensor(h); h['x'.repeat(3000)] = h[k]!; delete h[k]; }) },
  { target: 'tokenizer.json', what: 'model.merges null (was "Cannot read properties of null")', mutate: (b) => jsonEdit(b, (j) => { (j.model as Record<string, unknown>).merges = null; }) },
  { target: 'tokenizer.json', what: 'model.merges {} (was "config.merges.map is not a function")', mutate: (b) => jsonEdit(b, (j) => { (j.model as Record<string, unknown>).merges = {}; }) },
  { target: 'tokenizer.json', what: 'model.type "Unigram" over a BPE vocab (was "text is not iterable")', mutate: (b) => jsonEdit(b, (j) => { (j.model as Record<string, unknown>).type = 'Unigram'; }) },
  { target: 'tokenizer.json', what: 'model.vocab["p"] a 20000-deep array (was "Maximum call stack size exceeded")', mutate: (b) => jsonEdit(b, (j) => { ((j.model as Record<string, unknown>).vocab as Record<string, unknown>).p = DEEP; }) },
  { target: 'tokenizer.json', what: 'null (was read as "no tokenizer": the model opened without one)', mutate: () => enc('null') },
  { target: 'gguf (floe)', what: 'tokenizer.ggml.pre "llama-xyz" (the error named no file)', mutate: (b) => replaceBytes(b, 'llama-bpe', 'llama-xyz') },
  { target: 'gguf (gguf-py)', what: 'a BYTE token "<2xEB>" (the error named no file)', mutate: (b) => replaceBytes(b, '<0xEB>', '<2xEB>') },
  { target: 'gguf (floe)', what: 'blk.0.attn_q.weight ne1 set to 0 (read, not mapped: "Q/K permutation: 0 bytes do not split into 0 rows")', mutate: (b) => {
    const f = ggufFields(b).fields.filter((x) => x.kind === 'dim' && x.owner === 'blk.0.attn_q.weight')[1]!;
    const c = b.slice();
    new DataView(c.buffer).setBigUint64(f.at, 0n, true);
    return c;
  } },
];

/** Case i of a run: its own PRNG stream, so any case can be rebuilt alone; i >= CASES: regression i - CASES. */
function makeCase(root: string, i: number): { target: Target; what: string; bytes: Uint8Array; harmless: boolean; mustFail: boolean } {
  if (i >= CASES) {
    const reg = REGRESSIONS[i - CASES]!;
    const target = TARGETS.find((t) => t.name === reg.target)!;
    return { target, what: `regression: ${reg.what}`, bytes: reg.mutate(new Uint8Array(fs.readFileSync(path.join(root, target.src)))), harmless: false, mustFail: true };
  }
  const r = rng((SEED ^ Math.imul(i + 1, 0x9e3779b1)) >>> 0);
  const target = TARGETS[i % TARGETS.length]!;
  const good = new Uint8Array(fs.readFileSync(path.join(root, target.src)));
  const m = target.mutate(good, r);
  return { target, what: m.what, bytes: m.bytes, harmless: m.harmless ?? false, mustFail: false };
}

// ---------------------------------------------------------------- child: run a range of cases

async function child(root: string, from: number, to: number): Promise<void> {
  const { loadModel } = await import('../../src/formats/load.js');
  const { openModel } = await import('../../src/model/open.js');
  const { readPeftAdapter } = await import('../../src/model/adapter.js');
  const cfg = (await loadModel(path.join(root, 'hf'))).config;
  const work = fs.mkdtempSync(path.join(root, 'cases-'));
  const cases = [...Array.from({ length: to - from }, (_, k) => from + k), ...REGRESSIONS.map((_, k) => CASES + k)];
  for (const i of cases) {
    process.stdout.write(JSON.stringify({ start: i }) + '\n');
    const c = makeCase(root, i);
    const caseDir = path.join(work, String(i));
    fs.mkdirSync(caseDir);
    // the target's directory with every other file linked to the good fixture
    const srcDir = path.join(root, path.dirname(c.target.src));
    const isDir = c.target.src.includes('/');
    const dir = isDir ? caseDir : path.join(caseDir, path.basename(c.target.src));
    if (isDir) for (const f of fs.readdirSync(srcDir)) fs.symlinkSync(path.join(srcDir, f), path.join(caseDir, f));
    const file = isDir ? path.join(caseDir, path.basename(c.target.src)) : dir;
    fs.rmSync(file, { force: true });
    fs.writeFileSync(file, c.bytes);
    let res: Pick<Outcome, 'outcome' | 'name' | 'message'>;
    try {
      if (c.target.run === 'load') (await loadModel(dir)).dispose();
      else if (c.target.run === 'open') (await openModel(dir)).loaded.dispose();
      else readPeftAdapter(dir, cfg);
      res = { outcome: 'ok' };
    } catch (e) {
      res = e instanceof Error ? { outcome: 'error', name: e.name, message: e.message } : { outcome: 'error', name: typeof e, message: String(e) };
    }
    const out: Outcome = { i, target: c.target.name, what: c.what, file, dir, harmless: c.harmless, mustFail: c.mustFail, ...res, maxRss: process.resourceUsage().maxRSS * 1024 };
    process.stdout.write(JSON.stringify(out) + '\n');
    fs.rmSync(caseDir, { recursive: true, force: true });
  }
}

if (process.env.FLOE_MALFORMED_CHILD === '1') {
  const [root, from, to] = process.argv.slice(2);
  await child(root!, Number(from), Number(to));
} else {
  // ---------------------------------------------------------------- parent

  /** The good fixtures: an HF dir with a tokenizer, a GGUF floe wrote from it, gguf-py's GGUF, a PEFT adapter. */
  async function makeFixtures(): Promise<string> {
    const { loadModel } = await import('../../src/formats/load.js');
    const { hfToGguf } = await import('../../src/formats/gguf-writer.js');
    const { writePeftAdapter, loraDims } = await import('../../src/formats/peft.js');
    const root = tmpDir('floe-malformed-');
    const hf = path.join(root, 'hf');
    fs.mkdirSync(hf);
    for (const f of ['config.json', 'model.safetensors']) fs.copyFileSync(path.join(REPO, 'test/fixtures/models/gqa_f32', f), path.join(hf, f));
    for (const f of ['tokenizer.json', 'tokenizer_config.json']) fs.copyFileSync(path.join(REPO, 'test/fixtures/train/tokenizer', f), path.join(hf, f));
    const m = await loadModel(hf);
    await hfToGguf(m, path.join(root, 'floe.gguf'), 'q8_0');
    fs.copyFileSync(path.join(REPO, 'test/fixtures/gguf-independent/tiny-llama.gguf'), path.join(root, 'gguf-py.gguf'));
    const r = rng(SEED);
    const layers = Array.from({ length: m.config.numLayers }, () => {
      const lay: Partial<Record<LoraTarget, PeftLinear>> = {};
      for (const t of ['q', 'v', 'down'] as const) {
        const [N, C] = loraDims(m.config, t);
        lay[t] = { N, C, rank: 4, a: Float32Array.from({ length: 4 * C }, () => r() - 0.5), b: Float32Array.from({ length: N * 4 }, () => r() - 0.5) };
      }
      return lay;
    });
    writePeftAdapter(path.join(root, 'adapter'), { config: { rank: 4, alpha: 8, targets: ['q', 'v', 'down'], rslora: false, dropout: 0 }, layers }, 'gqa_f32');
    return root;
  }

  interface BatchResult { outcomes: Outcome[]; started: number | null; code: number | null; signal: string | null; timedOut: boolean; stderr: string }

  function runBatch(root: string, from: number, to: number, mmap: boolean): Promise<BatchResult> {
    return new Promise((resolve) => {
      const env = { ...process.env, FLOE_MALFORMED_CHILD: '1', FLOE_SEED: String(SEED), FLOE_NO_MMAP: mmap ? '0' : '1' };
      const p = spawn(process.execPath, ['--max-old-space-size=1024', '--import', 'tsx', HERE, root, String(from), String(to)], { env, cwd: REPO });
      let out = '', err = '', timedOut = false;
      p.stdout.on('data', (d) => { out += d; });
      p.stderr.on('data', (d) => { err += d; });
      const timer = setTimeout(() => { timedOut = true; p.kill('SIGKILL'); }, BATCH_DEADLINE_MS);
      p.on('close', (code, signal) => {
        clearTimeout(timer);
        const outcomes: Outcome[] = [];
        let started: number | null = null;
        for (const line of out.split('\n')) {
          if (!line) continue;
          const j = JSON.parse(line) as Outcome | { start: number };
          if ('start' in j) started = j.start; else { outcomes.push(j); started = null; }
        }
        resolve({ outcomes, started, code, signal, timedOut, stderr: err.slice(-4000) });
      });
    });
  }

  // Raw engine errors: a loader that did not check what it read.
  const RAW = /Cannot read propert|Invalid array length|outside the bounds|Maximum call stack|is not a function|is not iterable|is not defined|Invalid typed array length|Array buffer allocation failed|should be a multiple of|Cannot convert|Unexpected token|Unexpected end of JSON/;

  /** Why an outcome breaks the rule, or null. */
  function problem(o: Outcome): string | null {
    if (o.outcome === 'ok') return o.mustFail ? 'loaded, but must be refused' : null;
    if (o.harmless) return `a harmless corruption was refused: ${o.name}: ${o.message}`;
    const msg = o.message ?? '';
    if (o.name !== 'Error') return `threw ${o.name}, not an Error with a message: ${msg}`;
    // a JSON parser's or the tokenizers library's own words may follow, after the loader's
    if (RAW.test(msg.replace(/(bad (header )?JSON|invalid JSON|the tokenizers library says): .*/s, ''))) return `raw engine error: ${msg}`;
    // the file, or for a whole-model check (a tensor missing or mis-shaped) the model directory and the tensor
    const named = msg.includes(o.file) || (msg.startsWith(`${o.dir}:`) && /tensor "/.test(msg));
    if (!named) return `error does not name ${o.file}: ${msg}`;
    if (msg.length > 2000) return `error is ${msg.length} chars long: ${msg.slice(0, 300)}...`;
    return null;
  }

  test(`malformed model files (seed ${SEED}, FLOE_SEED=${SEED} replays): each loads or throws an Error naming the file, no crash, hang or giant allocation`, async (t) => {
    const root = await makeFixtures();
    const per = Math.ceil(CASES / BATCHES);
    const ranges = Array.from({ length: BATCHES }, (_, b) => [b * per, Math.min(CASES, (b + 1) * per)] as const);
    const results: BatchResult[] = [];
    for (let b = 0; b < BATCHES; b += 2) { // two at a time: the test machines have two cores
      results.push(...await Promise.all(ranges.slice(b, b + 2).map(([from, to], k) => runBatch(root, from, to, (b + k) % 2 === 0))));
    }
    const bad: string[] = [];
    const counts: Record<string, { ok: number; error: number }> = {};
    results.forEach((res, b) => {
      const [from, to] = ranges[b]!;
      if (res.timedOut || res.code !== 0 || res.outcomes.length !== to - from + REGRESSIONS.length) {
        const at = res.started ?? `after ${res.outcomes.at(-1)?.i ?? 'none'}`;
        const how = res.timedOut ? `no end after ${BATCH_DEADLINE_MS} ms` : res.signal ? `killed by ${res.signal}` : `exit code ${res.code}`;
        bad.push(`batch ${from}..${to}: ${how} at case ${at}\n${res.stderr}`);
      }
      let peak = 0;
      for (const o of res.outcomes) {
        if (!o.mustFail) (counts[o.target] ??= { ok: 0, error: 0 })[o.outcome]++;
        const p = problem(o);
        if (p) bad.push(`case ${o.i} [${o.target}] ${o.what}: ${p}`);
        // the case during which the child's peak first passed the limit
        if (o.maxRss > MAX_RSS_BYTES && peak <= MAX_RSS_BYTES) bad.push(`case ${o.i} [${o.target}] ${o.what}: child peak RSS ${(o.maxRss / 2 ** 20).toFixed(0)} MiB`);
        peak = Math.max(peak, o.maxRss);
      }
    });
    fs.rmSync(root, { recursive: true, force: true });
    const peakMiB = Math.max(...results.flatMap((res) => res.outcomes.map((o) => o.maxRss))) / 2 ** 20;
    t.diagnostic(`refused / loaded: ${Object.entries(counts).map(([k, c]) => `${k} ${c.error}/${c.ok}`).join(', ')}; children's peak RSS ${peakMiB.toFixed(0)} MiB`);
    assert.deepEqual(bad, [], `seed ${SEED} (FLOE_SEED=${SEED} replays):\n${bad.join('\n')}`);
    // the corruptions are real: most are caught, for every kind of file
    // (about half of each target's are; a fifth leaves 4 standard deviations at 60 cases a target)
    for (const [t, c] of Object.entries(counts)) assert.ok(c.error > (c.ok + c.error) / 5, `${t}: only ${c.error} of ${c.ok + c.error} corruptions refused`);
    assert.equal(Object.keys(counts).length, TARGETS.length);
  });
}
