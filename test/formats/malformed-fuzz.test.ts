// Fuzz: malformed model files (safetensors, GGUF, config.json, tokenizer.json, tokenizer_config.json,
// generation_config.json, sharded checkpoints' index and shards, FP8 scale tensors, PEFT adapters) are loaded in child
// processes, so that a crash shows as a signal, a hang as a deadline and a giant allocation as peak RSS; each case
// must load or throw an Error naming the file, never a raw TypeError / RangeError; a case whose corruption breaks what
// the file must hold (mustFail) must be refused, one that cannot matter (harmless) must load. FLOE_SEED=N replays a
// run, FLOE_FUZZ_CASES=N changes how many random cases it makes (default 840, 60 a kind of file; a fixed list of
// regressions runs too).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { rng, tmpDir } from './fixtures.js';
import { nodeScript, ROOT as REPO } from '../repo.js';
import type { LoraTarget, PeftLinear } from '../../src/formats/peft.js';

const SEED = process.env.FLOE_SEED !== undefined ? Number(process.env.FLOE_SEED) >>> 0 : (Math.random() * 2 ** 32) >>> 0;
const CASES = Number(process.env.FLOE_FUZZ_CASES ?? 840); // 60 a kind of file
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

// ---------------------------------------------------------------- tokenizer_config.json, generation_config.json

/** The ids tokenizer.json names (vocab and added tokens): an eos id outside them is no token. */
function tokenizerIds(root: string): Set<number> {
  const j = JSON.parse(fs.readFileSync(path.join(root, 'hf/tokenizer.json'), 'utf8')) as { model: { vocab: Record<string, number> }; added_tokens: { id: number }[] };
  return new Set([...Object.values(j.model.vocab), ...j.added_tokens.map((t) => t.id)]);
}

/** Each value with whether a loader must refuse it: [value, bad]. */
type Graded = readonly (readonly [unknown, boolean])[];

/** A JSON file with one key set to a graded value (bad: mustFail, good: harmless). */
function setKey(b: Uint8Array, r: R, key: string, values: Graded): Mutation {
  const j = JSON.parse(text(b)) as Record<string, unknown>;
  const [v, isBad] = choose(r, values);
  if (v === undefined) delete j[key]; else j[key] = v;
  return { what: `"${key}" ${v === undefined ? 'deleted' : `set to ${short(v)}`}`, bytes: enc(deepText(JSON.stringify(j))), mustFail: isBad, harmless: !isBad };
}

const TEMPLATE = '{{ bos_token }}{% for m in messages %}[{{ m[\'role\'] }}]{{ m[\'content\'] }}\n{% endfor %}{% if add_generation_prompt %}[assistant]{% endif %}';
const TOKCFG_KEYS = ['bos_token', 'eos_token', 'unk_token', 'chat_template', 'add_bos_token', 'add_eos_token', 'additional_special_tokens', 'model_max_length'];

/** tokenizer_config.json: special tokens, add_bos/eos_token, additional_special_tokens, chat_template, or any field. */
function mutateTokenizerConfig(b: Uint8Array, r: R): Mutation {
  const k = pick(r, 6);
  if (k === 0) {
    const key = choose(r, ['bos_token', 'eos_token']);
    return setKey(b, r, key, [['<s>', false], ['</s>', false], [{ content: '</s>', special: true, __type: 'AddedToken' }, false], [null, false], [undefined, false],
      [5, true], [true, true], [[], true], [{}, true], [{ content: 5 }, true], ['<nope>', true], ['', true], ['x'.repeat(5000), true], [DEEP, true]]);
  }
  if (k === 1) {
    const key = choose(r, ['add_bos_token', 'add_eos_token']);
    return setKey(b, r, key, [[true, false], [false, false], [null, false], [undefined, false], ['true', true], [1, true], [0, true], [[], true], [{}, true]]);
  }
  if (k === 2) {
    return setKey(b, r, 'additional_special_tokens', [[[], false], [['<s>', '</s>'], false], [[{ content: '</s>' }], false], [null, false],
      ['<s>', true], [5, true], [{}, true], [[5], true], [[null], true], [[{}], true], [DEEP, true]]);
  }
  if (k === 3) {
    const deepIf = '{% if true %}'.repeat(3000) + 'x' + '{% endif %}'.repeat(3000);
    const deepParen = `{{ ${'('.repeat(5000)}1${')'.repeat(5000)} }}`;
    return setKey(b, r, 'chat_template', [[TEMPLATE, false], [[{ name: 'default', template: TEMPLATE }], false], [[{ name: 'default', template: TEMPLATE }, { name: 'tool_use', template: TEMPLATE }], false],
      [null, false], [undefined, false], ['{% for %}', true], ['{{ unclosed', true], ['{% if x %}', true], ['{% endfor %}', true], [5, true], [{}, true], [[], true],
      [[{ name: 'default' }], true], [[{ name: 'tool_use', template: TEMPLATE }], true], [[null], true], ['{{ raise_exception("bad template") }}', true],
      [deepIf, true], [deepParen, true], [DEEP, true]]);
  }
  return mutateJson(text(b), r, TOKCFG_KEYS);
}

const GEN_KEYS = ['eos_token_id', 'bos_token_id', 'pad_token_id', 'do_sample', 'temperature', 'top_p', 'top_k', 'max_new_tokens', 'repetition_penalty'];

/** generation_config.json's eos_token_id: an id or a list of ids that tokenizer.json has; anything else is refused. */
function eosValues(ids: Set<number>): Graded {
  const max = Math.max(...ids);
  return [[2, false], [[2], false], [[2, 1], false], [[], false], [null, false], [undefined, false], [[1, 2, 2], false], [max, false],
    [-1, true], [1.5, true], ['2', true], [['</s>'], true], [[[2]], true], [[2, null], true], [{}, true], [true, true], [2 ** 53 + 2, true],
    [1e308, true], [max + 1, true], [5000, true], [[2, 256], true], [256, true], [DEEP, true], [Array.from({ length: 3000 }, (_, i) => i), true]];
}

/** generation_config.json read by openModel: eos ids, sampling defaults, or any field. */
function mutateGenerationConfig(b: Uint8Array, r: R, root: string): Mutation {
  const k = pick(r, 4);
  if (k === 0) return setKey(b, r, 'eos_token_id', eosValues(tokenizerIds(root)));
  if (k === 1) {
    const [key, values] = choose(r, [
      ['temperature', [[0, false], [0.7, false], [-1, true], ['hot', true], [[], true]]],
      ['top_p', [[1, false], [0.5, false], [0, true], [1.5, true], ['x', true]]],
      ['top_k', [[0, false], [40, false], [-1, true], [2.5, true], [null, false]]],
      ['max_new_tokens', [[1, false], [64, false], [0, true], [1.5, true], [{}, true]]],
      ['do_sample', [[true, false], [false, false], ['yes', true], [1, true]]],
    ] as const satisfies readonly (readonly [string, Graded])[]);
    return setKey(b, r, key, values);
  }
  return mutateJson(text(b), r, GEN_KEYS);
}

// ---------------------------------------------------------------- sharded checkpoints

/** A safetensors file's entries (read here, independently of safetensors.ts) and their rebuilt file. */
interface StEntry { readonly dtype: string; readonly shape: readonly number[]; readonly data: Uint8Array }
function stEntries(b: Uint8Array): Map<string, StEntry> {
  const n = Number(new DataView(b.buffer, b.byteOffset).getBigUint64(0, true));
  const h = JSON.parse(text(b.subarray(8, 8 + n))) as Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>;
  const out = new Map<string, StEntry>();
  for (const [k, e] of Object.entries(h)) if (k !== '__metadata__') out.set(k, { dtype: e.dtype, shape: e.shape, data: b.subarray(8 + n + e.data_offsets[0], 8 + n + e.data_offsets[1]) });
  return out;
}
const WIDTH: Record<string, number> = { F64: 8, I64: 8, F32: 4, I32: 4, F16: 2, BF16: 2 };
function stFile(entries: Map<string, StEntry>): Uint8Array {
  const list = [...entries].sort((a, b) => (WIDTH[b[1].dtype] ?? 1) - (WIDTH[a[1].dtype] ?? 1)); // widest first: data stay aligned
  const h: string[] = [];
  let off = 0;
  for (const [k, e] of list) { h.push(`${JSON.stringify(k)}:${JSON.stringify({ dtype: e.dtype, shape: e.shape, data_offsets: [off, off + e.data.length] })}`); off += e.data.length; }
  let json = `{${h.join(',')}}`;
  json += ' '.repeat((8 - (enc(json).length % 8)) % 8);
  const hb = enc(json);
  const out = new Uint8Array(8 + hb.length + off);
  new DataView(out.buffer).setBigUint64(0, BigInt(hb.length), true);
  out.set(hb, 8);
  let at = 8 + hb.length;
  for (const [, e] of list) { out.set(e.data, at); at += e.data.length; }
  return out;
}

const SHARD = 'model-00003-of-00005.safetensors'; // the sharded fixture's third of five shards (the one with most tensors)
/** An object's JSON with its keys as given (a "__proto__" key stays a key). */
const objectText = (entries: readonly (readonly [string, unknown])[]) => `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${JSON.stringify(v)}`).join(',')}}`;

/** model.safetensors.index.json: weight_map entries pointing at missing or wrong shards, names no shard holds, or any field. */
function mutateIndex(b: Uint8Array, r: R): Mutation {
  const j = JSON.parse(text(b)) as { metadata: unknown; weight_map: Record<string, string> };
  const entries = Object.entries(j.weight_map);
  const shards = [...new Set(entries.map(([, f]) => f))];
  const rebuild = (e: readonly (readonly [string, unknown])[], what: string, mustFail: boolean): Mutation =>
    ({ what, bytes: enc(`{"metadata":${JSON.stringify(j.metadata)},"weight_map":${objectText(e)}}`), mustFail });
  const at = pick(r, entries.length);
  const [name, shard] = entries[at]!;
  switch (pick(r, 8)) {
    case 0: {
      const f = choose(r, ['model-00009-of-00009.safetensors', `${shard}.bak`, '', '.', '..', '../hf/model.safetensors', '/etc/passwd', 'sub/x.safetensors',
        'config.json', 'model.safetensors.index.json', 'x'.repeat(3000)]);
      return rebuild(entries.map((e, i) => (i === at ? [e[0], f] : e)), `weight_map[${short(name)}] set to missing shard ${short(f)}`, true);
    }
    case 1: {
      const f = choose(r, shards.filter((s) => s !== shard));
      return rebuild(entries.map((e, i) => (i === at ? [e[0], f] : e)), `weight_map[${short(name)}] set to ${f}, which does not hold it`, true);
    }
    case 2: {
      const to = choose(r, [`${name}_typo`, 'model.layers.0.self_attn.q_proj.weight_scale', '__proto__', 'constructor', '', 'x'.repeat(3000)]);
      return rebuild(entries.map((e, i) => (i === at ? [to, e[1]] : e)), `weight_map key ${short(name)} renamed to ${short(to)}`, true);
    }
    case 3: {
      const to = choose(r, ['model.layers.9.mlp.up_proj.weight', '__proto__', 'lm_head.bias', 'x'.repeat(3000)]);
      return rebuild([...entries, [to, choose(r, shards)]], `weight_map lists ${short(to)}, which no shard holds`, true);
    }
    case 4: {
      const v = choose(r, [{}, null, [], 'model.safetensors', 5, [[name, shard]], { [name]: shard }]);
      return { what: `weight_map set to ${short(v)}`, bytes: enc(JSON.stringify({ ...j, weight_map: v })), mustFail: true };
    }
    case 5: {
      const v = wrongValue(r);
      return rebuild(entries.map((e, i) => (i === at ? [e[0], v] : e)), `weight_map[${short(name)}] set to ${short(v)}`, true);
    }
    case 6: {
      // HF loads every tensor of each listed shard: a tensor left out of weight_map still loads while its shard is listed
      return rebuild(entries.filter((_, i) => i !== at), `weight_map entry ${short(name)} deleted`, false);
    }
    default:
      return { ...mutateJson(text(b), r, ['weight_map', 'metadata']) };
  }
}

/** One shard: its header and data as any safetensors file, a tensor another shard holds too, removed, truncated. */
function mutateShard(b: Uint8Array, r: R, root: string): Mutation {
  const k = pick(r, 8);
  if (k < 4) return mutateSafetensors(b, r);
  const es = stEntries(b);
  if (k === 4) {
    const other = stEntries(new Uint8Array(fs.readFileSync(path.join(root, 'sharded', choose(r, ['model-00001-of-00005.safetensors', 'model-00002-of-00005.safetensors'])))));
    const name = choose(r, [...other.keys()]);
    es.set(name, other.get(name)!);
    return { what: `tensor ${name} of another shard added`, bytes: stFile(es), mustFail: true };
  }
  if (k === 5) return { what: 'removed', bytes: null, mustFail: true };
  if (k === 6) {
    const full = stFile(es);
    const dataStart = 8 + Number(new DataView(full.buffer).getBigUint64(0, true));
    const at = dataStart + pick(r, full.length - dataStart);
    return { what: `truncated to ${at} of ${full.length} bytes (in the tensor data)`, bytes: full.slice(0, at), mustFail: true };
  }
  const name = choose(r, [...es.keys()]);
  const e = es.get(name)!;
  es.delete(name);
  es.set(`${name}.moved`, e);
  return { what: `tensor ${name} renamed to ${name}.moved`, bytes: stFile(es), mustFail: true };
}

// ---------------------------------------------------------------- FP8 scale tensors

const FP8_BLOCK = { 'fp8 scales (block)': [128, 128], 'fp8 scales (channel)': null } as const;

/**
 * Whether a scale of this shape fits an fp8 weight [N, C], as vLLM reads them: one value (per tensor), [N] or [N, 1]
 * (per output row), or the ceil(N / b0) x ceil(C / b1) grid of the config's weight_block_size.
 */
function scaleShapeFits(shape: readonly number[], N: number, C: number, block: readonly [number, number] | null): boolean {
  const numel = shape.reduce((a, d) => a * d, 1);
  if (numel === 1) return true;
  if ((shape.length === 1 && shape[0] === N) || (shape.length === 2 && shape[0] === N && shape[1] === 1)) return true;
  return !!block && shape.length === 2 && shape[0] === Math.ceil(N / block[0]) && shape[1] === Math.ceil(C / block[1]);
}

/** Whether the weight's block that scale value k multiplies holds a nonzero code (E4M3: any bit but the sign). */
function blockNonzero(w: StEntry, sShape: readonly number[], k: number, block: readonly [number, number] | null): boolean {
  const [N, C] = w.shape as [number, number];
  const numel = sShape.reduce((a, d) => a * d, 1);
  let r0 = 0, r1 = N, c0 = 0, c1 = C;
  if (numel === 1) { /* the whole tensor */ } else if (sShape[0] === N && numel === N) { r0 = k; r1 = k + 1; } else {
    const gc = Math.ceil(C / block![1]);
    r0 = Math.floor(k / gc) * block![0]; r1 = Math.min(N, r0 + block![0]); c0 = (k % gc) * block![1]; c1 = Math.min(C, c0 + block![1]);
  }
  for (let r = r0; r < r1; r++) for (let c = c0; c < c1; c++) if ((w.data[r * C + c]! & 0x7f) !== 0) return true;
  return false;
}

/** An FP8 checkpoint's scale tensor: missing, reshaped, another dtype, a NaN / Inf / negative / zero value, renamed. */
function mutateFp8(b: Uint8Array, r: R, block: readonly [number, number] | null): Mutation {
  if (r() < 0.2) return mutateSafetensors(b, r);
  const es = stEntries(b);
  const sName = choose(r, [...es.keys()].filter((k) => /\.weight_scale(_inv)?$/.test(k)));
  const s = es.get(sName)!;
  const w = es.get(sName.replace(/_scale(_inv)?$/, ''))!;
  const [N, C] = w.shape as [number, number];
  const vals = new Float32Array(s.data.slice().buffer); // the fixtures' scales are F32
  const put = (e: StEntry) => { es.set(sName, e); return stFile(es); };
  switch (pick(r, 6)) {
    case 0:
      es.delete(sName);
      return { what: `scale ${sName} removed`, bytes: stFile(es), mustFail: true };
    case 1: {
      const sh = s.shape;
      const numel = vals.length;
      const shape = choose(r, [[...sh].reverse(), [numel], [1, ...sh], [...sh, 1], [numel, 1], [1, numel], []].filter((x) => x.reduce((a, d) => a * d, 1) === numel));
      const fits = scaleShapeFits(shape, N, C, block);
      return { what: `scale ${sName} ${JSON.stringify(sh)} reshaped to ${JSON.stringify(shape)}`, bytes: put({ ...s, shape }), harmless: fits, mustFail: !fits };
    }
    case 2: {
      // twice or half as many values (the file stays consistent: the header's shape matches the data)
      const half = r() < 0.5 && s.shape[0]! > 1;
      const shape = half ? [Math.ceil(s.shape[0]! / 2), ...s.shape.slice(1)] : [s.shape[0]! * 2, ...s.shape.slice(1)];
      const n = shape.reduce((a, d) => a * d, 1);
      const data = new Float32Array(n).map((_, i) => vals[i % vals.length]!);
      const fits = scaleShapeFits(shape, N, C, block);
      return { what: `scale ${sName} ${JSON.stringify(s.shape)} given ${n} values as ${JSON.stringify(shape)}`, bytes: put({ ...s, shape, data: new Uint8Array(data.buffer) }), harmless: fits, mustFail: !fits };
    }
    case 3: {
      const dtype = choose(r, ['BF16', 'F16', 'F64', 'I32', 'I64', 'U8', 'F8_E4M3', 'BOOL']);
      let data: Uint8Array;
      if (dtype === 'BF16') data = new Uint8Array(Uint16Array.from(vals, (v) => new Uint32Array(new Float32Array([v]).buffer)[0]! >>> 16).buffer);
      else if (dtype === 'F16') data = new Uint8Array(Uint16Array.from(vals, (v) => f16Bits(v)).buffer);
      else if (dtype === 'F64') data = new Uint8Array(Float64Array.from(vals).buffer);
      else if (dtype === 'I32') data = new Uint8Array(Int32Array.from(vals, (v) => Math.round(v * 1e6)).buffer);
      else if (dtype === 'I64') data = new Uint8Array(BigInt64Array.from(vals, (v) => BigInt(Math.round(v * 1e6))).buffer);
      else data = Uint8Array.from(vals, () => 1);
      // BF16 / F16: the same values in a dtype scales may have; any other is not a scale
      const ok = dtype === 'BF16' || dtype === 'F16';
      return { what: `scale ${sName} stored as ${dtype}`, bytes: put({ ...s, dtype, data }), harmless: ok, mustFail: !ok };
    }
    case 4: {
      const k = pick(r, vals.length);
      const v = choose(r, [NaN, Infinity, -Infinity, -vals[k]!, 0, -0, 1e-30, 1e30, 1e-40]);
      const c = vals.slice();
      c[k] = v;
      // zero silences a block of weights (harmless only where the block's codes are all zero); the rest must be finite and positive
      const bad = !Number.isFinite(v) || v < 0 || (v === 0 && blockNonzero(w, s.shape, k, block));
      return { what: `scale ${sName}[${k}] set to ${Object.is(v, -0) ? '-0' : v}`, bytes: put({ ...s, data: new Uint8Array(c.buffer) }), harmless: !bad, mustFail: bad };
    }
    default: {
      // weight_scale and weight_scale_inv are both read (compressed-tensors / DeepSeek-style names)
      const to = sName.endsWith('_inv') ? sName.slice(0, -4) : `${sName}_inv`;
      es.delete(sName);
      es.set(to, s);
      return { what: `scale ${sName} renamed to ${to}`, bytes: stFile(es), harmless: true };
    }
  }
}

/** f32 -> IEEE half bits (round to nearest; the fixtures' scales are normal halves). */
function f16Bits(v: number): number {
  const f = new Float32Array([v]);
  const x = new Uint32Array(f.buffer)[0]!;
  const sign = (x >>> 16) & 0x8000;
  const e = ((x >>> 23) & 0xff) - 127 + 15;
  if (e <= 0) return sign;
  if (e >= 31) return sign | 0x7c00;
  return sign | ((e << 10) + Math.round((x & 0x7fffff) / 8192)); // a mantissa rounding up carries into the exponent
}

// ---------------------------------------------------------------- targets

interface Target {
  readonly name: string;
  readonly src: string; // fixture file, relative to the fixture root
  // load: loadModel; open: openModel (weights + tokenizer); peft: readPeftAdapter; tokenizer: loadTokenizer alone;
  // text: the server's text tools (loadTokenizer, loadChatTemplate, one chat rendered, readHfConfig)
  readonly run: 'load' | 'open' | 'peft' | 'tokenizer' | 'text';
  mutate(b: Uint8Array, r: R, root: string): Mutation;
}

/** One corruption; bytes null: the file is removed. mustFail: the corruption breaks what the file must hold. */
interface Mutation { readonly what: string; readonly bytes: Uint8Array | null; readonly harmless?: boolean; readonly mustFail?: boolean }

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
    if (r() < 0.3) {
      // one added token's field: the flags are booleans (the library read them as truthy), content a non-empty string
      const j = JSON.parse(text(b)) as { added_tokens: Record<string, unknown>[] };
      const i = pick(r, j.added_tokens.length);
      const key = choose(r, ['special', 'single_word', 'lstrip', 'rstrip', 'normalized', 'content', 'id']);
      const flag: Graded = [[true, false], [false, false], [undefined, false], ['false', true], [0, true], [1, true], [null, true], [{}, true], [DEEP, true]];
      const [v, isBad] = choose(r, key === 'content' ? [['', true], [5, true], [null, true], [undefined, true]] as Graded
        : key === 'id' ? [[-1, true], [1.5, true], ['1', true], [null, true], [2 ** 53 + 2, true]] as Graded : flag);
      if (v === undefined) delete j.added_tokens[i]![key]; else j.added_tokens[i]![key] = v;
      return { what: `added_tokens[${i}].${key} ${v === undefined ? 'deleted' : `set to ${short(v)}`}`, bytes: enc(deepText(JSON.stringify(j))), mustFail: isBad, harmless: !isBad };
    }
    return mutateJson(text(b), r, TOKENIZER_KEYS);
  } },
  { name: 'adapter_config.json', src: 'adapter/adapter_config.json', run: 'peft', mutate: (b, r) => mutateJson(text(b), r, ADAPTER_KEYS) },
  { name: 'adapter_model.safetensors', src: 'adapter/adapter_model.safetensors', run: 'peft', mutate: (b, r) => {
    // a flipped exponent bit can make a factor NaN or Inf, which the reader refuses: then the flip is no longer harmless
    const m = mutateSafetensors(b, r);
    if (!m.harmless || m.what.includes('padded')) return m;
    const n = Number(new DataView(m.bytes.buffer, m.bytes.byteOffset).getBigUint64(0, true));
    const f32 = new Float32Array(m.bytes.slice(8 + n).buffer, 0, (m.bytes.length - 8 - n) >> 2); // F32 factors only
    return f32.every(Number.isFinite) ? m : { ...m, what: `${m.what} (a factor now NaN / Inf)`, harmless: false, mustFail: true };
  } },
  { name: 'tokenizer_config.json', src: 'hf/tokenizer_config.json', run: 'text', mutate: mutateTokenizerConfig },
  { name: 'generation_config.json', src: 'hf/generation_config.json', run: 'open', mutate: mutateGenerationConfig },
  { name: 'generation_config.json (tokenizer)', src: 'hf/generation_config.json', run: 'tokenizer', mutate: (b, r, root) => setKey(b, r, 'eos_token_id', eosValues(tokenizerIds(root))) },
  { name: 'model.safetensors.index.json', src: 'sharded/model.safetensors.index.json', run: 'load', mutate: mutateIndex },
  { name: 'shard', src: `sharded/${SHARD}`, run: 'load', mutate: mutateShard },
  { name: 'fp8 scales (block)', src: 'fp8_block/model.safetensors', run: 'load', mutate: (b, r) => mutateFp8(b, r, FP8_BLOCK['fp8 scales (block)']) },
  { name: 'fp8 scales (channel)', src: 'fp8_channel/model.safetensors', run: 'load', mutate: (b, r) => mutateFp8(b, r, FP8_BLOCK['fp8 scales (channel)']) },
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

/** The per-channel FP8 fixture with layer 0 o_proj's F32 scales edited. */
const fp8Scale = (b: Uint8Array, edit: (v: Float32Array) => void) => {
  const es = stEntries(b);
  const name = 'model.layers.0.self_attn.o_proj.weight_scale';
  const s = es.get(name) ?? es.get(`${name}_inv`)!;
  const v = new Float32Array(s.data.slice().buffer);
  edit(v);
  es.set(es.has(name) ? name : `${name}_inv`, { ...s, data: new Uint8Array(v.buffer) });
  return stFile(es);
};
/** The sharded fixture's index with its weight_map entries edited. */
const indexEdit = (b: Uint8Array, edit: (e: [string, string][]) => (readonly [string, string])[]) => {
  const j = JSON.parse(text(b)) as { metadata: unknown; weight_map: Record<string, string> };
  return enc(`{"metadata":${JSON.stringify(j.metadata)},"weight_map":${objectText(edit(Object.entries(j.weight_map)))}}`);
};

/** Corruptions that once crashed a loader or gave an imprecise error: run in every batch (mmap and read), each refused. */
const REGRESSIONS: readonly { readonly target: string; readonly what: string; mutate(b: Uint8Array, root: string): Uint8Array | null }[] = [
  { target: 'config.json', what: '"architectures" a 20000-deep array (was a RangeError: Maximum call stack, from the message)', mutate: (b) => jsonEdit(b, (j) => { j.architectures = DEEP; }) },
  { target: 'config.json', what: 'eos_token_id [2, 256] with vocab_size 256 (loadModel kept a stop that never fires)', mutate: (b) => jsonEdit(b, (j) => { j.eos_token_id = [2, j.vocab_size]; }) },
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
  { target: 'fp8 scales (channel)', what: 'a NaN scale (was loaded into its weights\' row)', mutate: (b) => fp8Scale(b, (v) => { v[3] = NaN; }) },
  { target: 'fp8 scales (channel)', what: 'a negative scale (was loaded: the row\'s sign flipped)', mutate: (b) => fp8Scale(b, (v) => { v[0] = -v[0]!; }) },
  { target: 'fp8 scales (block)', what: 'a zero scale over nonzero weights (was loaded: the block silenced)', mutate: (b) => fp8Scale(b, (v) => { v[0] = 0; }) },
  { target: 'fp8 scales (channel)', what: 'o_proj\'s weight_scale copied to weight_scale_inv (one of the two was loaded)', mutate: (b) => {
    const es = stEntries(b);
    es.set('model.layers.0.self_attn.o_proj.weight_scale_inv', es.get('model.layers.0.self_attn.o_proj.weight_scale')!);
    return stFile(es);
  } },
  { target: 'fp8 scales (block)', what: 'a weight_scale_inv for the BF16 lm_head.weight (was ignored)', mutate: (b) => {
    const es = stEntries(b);
    es.set('lm_head.weight_scale_inv', { dtype: 'F32', shape: [1, 1], data: new Uint8Array(new Float32Array([1]).buffer) });
    return stFile(es);
  } },
  { target: 'model.safetensors.index.json', what: 'weight_map lists "__proto__" (the plain object took it as its prototype: ignored)', mutate: (b) => indexEdit(b, (e) => [...e, ['__proto__', e[0]![1]]]) },
  { target: 'model.safetensors.index.json', what: 'weight_map value "" (was "<dir>: not a regular file")', mutate: (b) => indexEdit(b, (e) => e.map(([k, f], i) => [k, i === 0 ? '' : f])) },
  { target: 'model.safetensors.index.json', what: 'a tensor no shard holds (the error named the shard, not the index)', mutate: (b) => indexEdit(b, (e) => [...e, ['lm_head.bias', e[0]![1]]]) },
  { target: 'model.safetensors.index.json', what: 'weight_map value "config.json" (the error named config.json only)', mutate: (b) => indexEdit(b, (e) => e.map(([k, f], i) => [k, i === 0 ? 'config.json' : f])) },
  { target: 'shard', what: 'removed (the error named the shard by its base name)', mutate: () => null },
  { target: 'tokenizer_config.json', what: 'additional_special_tokens "<s>" (the library\'s TypeError, blamed on tokenizer.json)', mutate: (b) => jsonEdit(b, (j) => { j.additional_special_tokens = '<s>'; }) },
  { target: 'tokenizer_config.json', what: 'add_bos_token "false" (was ignored: BOS still added)', mutate: (b) => jsonEdit(b, (j) => { j.add_bos_token = 'false'; }) },
  { target: 'tokenizer_config.json', what: 'eos_token "<nope>" (not in the vocabulary: was ignored)', mutate: (b) => jsonEdit(b, (j) => { j.eos_token = '<nope>'; }) },
  { target: 'tokenizer_config.json', what: 'chat_template nested 5000 parentheses deep (was "Maximum call stack size exceeded")', mutate: (b) => jsonEdit(b, (j) => { j.chat_template = `{{ ${'('.repeat(5000)}1${')'.repeat(5000)} }}`; }) },
  { target: 'generation_config.json (tokenizer)', what: 'eos_token_id ["</s>"] (loadTokenizer dropped it)', mutate: (b) => jsonEdit(b, (j) => { j.eos_token_id = ['</s>']; }) },
  { target: 'generation_config.json (tokenizer)', what: 'eos_token_id 5000, past the tokenizer\'s ids (was kept)', mutate: (b) => jsonEdit(b, (j) => { j.eos_token_id = 5000; }) },
  { target: 'tokenizer.json', what: 'added_tokens[1].special "false" (read as truthy)', mutate: (b) => jsonEdit(b, (j) => { (j.added_tokens as Record<string, unknown>[])[1]!.special = 'false'; }) },
  { target: 'gguf (floe)', what: 'blk.0.attn_q.weight ne1 set to 0 (read, not mapped: "Q/K permutation: 0 bytes do not split into 0 rows")', mutate: (b) => {
    const f = ggufFields(b).fields.filter((x) => x.kind === 'dim' && x.owner === 'blk.0.attn_q.weight')[1]!;
    const c = b.slice();
    new DataView(c.buffer).setBigUint64(f.at, 0n, true);
    return c;
  } },
];

/** Case i of a run: its own PRNG stream, so any case can be rebuilt alone; i >= CASES: regression i - CASES. */
function makeCase(root: string, i: number): { target: Target; what: string; bytes: Uint8Array | null; harmless: boolean; mustFail: boolean } {
  if (i >= CASES) {
    const reg = REGRESSIONS[i - CASES]!;
    const target = TARGETS.find((t) => t.name === reg.target)!;
    return { target, what: `regression: ${reg.what}`, bytes: reg.mutate(new Uint8Array(fs.readFileSync(path.join(root, target.src))), root), harmless: false, mustFail: true };
  }
  const r = rng((SEED ^ Math.imul(i + 1, 0x9e3779b1)) >>> 0);
  const target = TARGETS[i % TARGETS.length]!;
  const good = new Uint8Array(fs.readFileSync(path.join(root, target.src)));
  const m = target.mutate(good, r, root);
  return { target, what: m.what, bytes: m.bytes, harmless: m.harmless ?? false, mustFail: m.mustFail ?? false };
}

// ---------------------------------------------------------------- child: run a range of cases

async function child(root: string, from: number, to: number): Promise<void> {
  const { loadModel } = await import('../../src/formats/load.js');
  const { openModel } = await import('../../src/model/open.js');
  const { readPeftAdapter } = await import('../../src/model/adapter.js');
  const { loadTokenizer } = await import('../../src/formats/tokenizer.js');
  const { loadChatTemplate } = await import('../../src/formats/chat-template.js');
  const { readHfConfig } = await import('../../src/formats/hf-config.js');
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
    if (c.bytes) fs.writeFileSync(file, c.bytes);
    let res: Pick<Outcome, 'outcome' | 'name' | 'message'>;
    try {
      if (c.target.run === 'load') (await loadModel(dir)).dispose();
      else if (c.target.run === 'open') (await openModel(dir)).loaded.dispose();
      else if (c.target.run === 'peft') readPeftAdapter(dir, cfg);
      else if (c.target.run === 'tokenizer') await loadTokenizer(dir);
      else {
        // as the server's loadTextTools, then one chat rendered as a request would be
        const tok = await loadTokenizer(dir);
        const template = await loadChatTemplate(dir);
        template?.render([{ role: 'user', content: 'hi' }], { addGenerationPrompt: true, bosToken: tok?.bosToken ?? '', eosToken: tok?.eosToken ?? '' });
        readHfConfig(dir);
      }
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
    const { readSafetensorsSync, writeSafetensorsSharded } = await import('../../src/formats/safetensors.js');
    const root = tmpDir('floe-malformed-');
    const hf = path.join(root, 'hf');
    fs.mkdirSync(hf);
    for (const f of ['config.json', 'model.safetensors']) fs.copyFileSync(path.join(REPO, 'test/fixtures/models/gqa_f32', f), path.join(hf, f));
    for (const f of ['tokenizer.json', 'tokenizer_config.json']) fs.copyFileSync(path.join(REPO, 'test/fixtures/train/tokenizer', f), path.join(hf, f));
    fs.writeFileSync(path.join(hf, 'generation_config.json'), JSON.stringify({ bos_token_id: 1, eos_token_id: [2], pad_token_id: 0, do_sample: true, temperature: 0.6, top_p: 0.9, max_new_tokens: 32 }));
    const m = await loadModel(hf);
    // the same weights in five shards with an index, as floe writes them
    const sharded = path.join(root, 'sharded');
    const st = readSafetensorsSync(path.join(hf, 'model.safetensors'));
    writeSafetensorsSharded(sharded, Object.fromEntries([...st.tensors].map(([k, t]) => [k, { dtype: t.dtype, shape: t.shape, data: t.data }])), { maxShardBytes: 100_000 });
    fs.copyFileSync(path.join(hf, 'config.json'), path.join(sharded, 'config.json'));
    assert.ok(fs.existsSync(path.join(sharded, SHARD)), `the sharded fixture has no ${SHARD}: ${fs.readdirSync(sharded).join(', ')}`);
    for (const d of ['fp8_block', 'fp8_channel']) {
      fs.mkdirSync(path.join(root, d));
      for (const f of ['config.json', 'model.safetensors']) fs.copyFileSync(path.join(REPO, 'test/fixtures/models', d, f), path.join(root, d, f));
    }
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
      const p = spawn(process.execPath, ['--max-old-space-size=1024', ...nodeScript('test/formats/malformed-fuzz.test.ts'), root, String(from), String(to)], { env, cwd: REPO });
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
    // a JSON parser's, the tokenizers library's or the Jinja parser's own words may follow, after the loader's
    // (a stack overflow never: that is a loader that did not bound what it read)
    if (/Maximum call stack/.test(msg) || RAW.test(msg.replace(/(bad (header )?JSON|invalid JSON|the tokenizers library says|cannot parse chat template): .*/s, ''))) return `raw engine error: ${msg}`;
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
        if (o.i < CASES) (counts[o.target] ??= { ok: 0, error: 0 })[o.outcome]++;
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
