// SentencePiece tokenizer.model (protobuf ModelProto) -> SpmModel, and the Tokenizer for an HF dir that has only that file.

import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { SpmTokenizer, SpmTokenType, spmTokenizerJson, type SpmModel } from './spm.js';
import type { TokenizerConfigJson } from './tokenizer.js';

/** What floe reads from a ModelProto (sentencepiece_model.proto field numbers in comments). */
export interface SpmModelProto {
  readonly pieces: string[]; // (V) pieces[i].piece (1.1)
  readonly scores: Float32Array; // (V) pieces[i].score (1.2)
  readonly types: Uint8Array; // (V) pieces[i].type (1.3), default NORMAL
  readonly modelType: number; // trainer_spec.model_type (2.3): 1 UNIGRAM, 2 BPE, 3 WORD, 4 CHAR
  readonly byteFallback: boolean; // trainer_spec.byte_fallback (2.35)
  readonly treatWhitespaceAsSuffix: boolean; // trainer_spec.treat_whitespace_as_suffix (2.24)
  readonly unkId: number; // trainer_spec.unk_id (2.40), default 0
  readonly bosId: number; // 2.41, default 1; -1 when disabled
  readonly eosId: number; // 2.42, default 2
  readonly padId: number; // 2.43, default -1
  readonly normalizerName: string; // normalizer_spec.name (3.1)
  readonly precompiledCharsmapBytes: number; // normalizer_spec.precompiled_charsmap (3.2) length
  readonly addDummyPrefix: boolean; // 3.3, default true
  readonly removeExtraWhitespaces: boolean; // 3.4, default true
  readonly escapeWhitespaces: boolean; // 3.5, default true
}

/** Minimal protobuf wire-format reader: varints, fixed32, fixed64, length-delimited. */
class Wire {
  pos = 0;
  constructor(readonly buf: Uint8Array, readonly end: number, readonly where: string) {}

  varint(): number {
    let r = 0, mul = 1;
    for (;;) {
      if (this.pos >= this.end) throw new Error(`${this.where}: truncated varint at byte ${this.pos}`);
      const b = this.buf[this.pos++]!;
      r += (b & 0x7f) * mul;
      if (b < 0x80) return r;
      mul *= 128;
      if (mul > 2 ** 63) throw new Error(`${this.where}: varint longer than 10 bytes at byte ${this.pos}`);
    }
  }

  /** An int32 field: negative values are sent as 10-byte two's complement varints; the low 32 bits are the value. */
  int32(): number {
    let lo = 0;
    for (let shift = 0; ; shift += 7) {
      if (this.pos >= this.end) throw new Error(`${this.where}: truncated varint at byte ${this.pos}`);
      const b = this.buf[this.pos++]!;
      if (shift < 32) lo |= (b & 0x7f) << shift;
      if (b < 0x80) return lo | 0;
      if (shift >= 63) throw new Error(`${this.where}: varint longer than 10 bytes at byte ${this.pos}`);
    }
  }

  float(): number {
    this.need(4);
    const v = new DataView(this.buf.buffer, this.buf.byteOffset + this.pos, 4).getFloat32(0, true);
    this.pos += 4;
    return v;
  }

  bytes(): Uint8Array {
    const n = this.varint();
    this.need(n);
    const b = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return b;
  }

  /** A length-delimited UTF-8 string field (a piece's text, the normalizer's name). */
  text(what: string): string {
    const at = this.pos;
    const b = this.bytes();
    try {
      return utf8.decode(b);
    } catch {
      throw new Error(`${this.where}: ${what} is not valid UTF-8 (${b.length} bytes at byte ${at})`);
    }
  }

  sub(): Wire {
    const n = this.varint();
    this.need(n);
    const w = new Wire(this.buf, this.pos + n, this.where);
    w.pos = this.pos;
    this.pos += n;
    return w;
  }

  skip(wire: number, field: number): void {
    if (wire === 0) this.varint();
    else if (wire === 1) { this.need(8); this.pos += 8; }
    else if (wire === 2) this.bytes();
    else if (wire === 5) { this.need(4); this.pos += 4; }
    else throw new Error(`${this.where}: field ${field} has unsupported wire type ${wire} at byte ${this.pos}`);
  }

  private need(n: number): void {
    if (this.pos + n > this.end) throw new Error(`${this.where}: field runs past the end (${n} bytes at ${this.pos}, message ends at ${this.end})`);
  }
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** Parses a serialized sentencepiece ModelProto. */
export function parseSpmModelProto(buf: Uint8Array, where: string): SpmModelProto {
  const w = new Wire(buf, buf.length, where);
  const pieces: string[] = [], scores: number[] = [], types: number[] = [];
  const m = {
    modelType: 1, byteFallback: false, treatWhitespaceAsSuffix: false, unkId: 0, bosId: 1, eosId: 2, padId: -1,
    normalizerName: '', precompiledCharsmapBytes: 0, addDummyPrefix: true, removeExtraWhitespaces: true, escapeWhitespaces: true,
  };
  while (w.pos < w.end) {
    const key = w.varint(), field = Math.floor(key / 8), wire = key & 7;
    if (field === 1 && wire === 2) {
      const p = w.sub();
      let piece: string | null = null, score = 0, type: number = SpmTokenType.NORMAL;
      while (p.pos < p.end) {
        const k = p.varint(), f = Math.floor(k / 8), t = k & 7;
        if (f === 1 && t === 2) piece = p.text(`piece ${pieces.length} text`);
        else if (f === 2 && t === 5) score = p.float();
        else if (f === 3 && t === 0) type = p.varint();
        else p.skip(t, f);
      }
      if (piece === null) throw new Error(`${where}: piece ${pieces.length} has no text`);
      pieces.push(piece); scores.push(score); types.push(type);
    } else if (field === 2 && wire === 2) {
      const t = w.sub();
      while (t.pos < t.end) {
        const k = t.varint(), f = Math.floor(k / 8), wt = k & 7;
        if (wt !== 0) { t.skip(wt, f); continue; }
        if (f === 3) m.modelType = t.varint();
        else if (f === 35) m.byteFallback = t.varint() !== 0;
        else if (f === 24) m.treatWhitespaceAsSuffix = t.varint() !== 0;
        else if (f === 40) m.unkId = t.int32();
        else if (f === 41) m.bosId = t.int32();
        else if (f === 42) m.eosId = t.int32();
        else if (f === 43) m.padId = t.int32();
        else t.skip(wt, f);
      }
    } else if (field === 3 && wire === 2) {
      const n = w.sub();
      while (n.pos < n.end) {
        const k = n.varint(), f = Math.floor(k / 8), wt = k & 7;
        if (f === 1 && wt === 2) m.normalizerName = n.text('normalizer_spec.name');
        else if (f === 2 && wt === 2) m.precompiledCharsmapBytes = n.bytes().length;
        else if (f === 3 && wt === 0) m.addDummyPrefix = n.varint() !== 0;
        else if (f === 4 && wt === 0) m.removeExtraWhitespaces = n.varint() !== 0;
        else if (f === 5 && wt === 0) m.escapeWhitespaces = n.varint() !== 0;
        else n.skip(wt, f);
      }
    } else {
      w.skip(wire, field);
    }
  }
  if (pieces.length === 0) throw new Error(`${where}: no pieces (not a sentencepiece ModelProto?)`);
  return { pieces, scores: Float32Array.from(scores), types: Uint8Array.from(types), ...m };
}

/** ModelProto -> the codec's model; throws for settings floe does not implement, saying which. */
export function spmModelFromProto(p: SpmModelProto, where: string): SpmModel {
  const V = p.pieces.length;
  if (p.modelType !== 2) throw new Error(`${where}: sentencepiece model_type ${p.modelType} (${['', 'UNIGRAM', 'BPE', 'WORD', 'CHAR'][p.modelType] ?? '?'}) is not supported; floe runs BPE models (model_type 2, as Llama and Mistral use)`);
  if (p.treatWhitespaceAsSuffix) throw new Error(`${where}: treat_whitespace_as_suffix is not supported`);
  if (!p.escapeWhitespaces) throw new Error(`${where}: escape_whitespaces = false is not supported`);
  // identity normalisation only: nmt_nfkc and custom rules need the precompiled charsmap
  if (p.precompiledCharsmapBytes > 0 || (p.normalizerName !== '' && p.normalizerName !== 'identity')) {
    throw new Error(`${where}: normalizer '${p.normalizerName}' (${p.precompiledCharsmapBytes}-byte charsmap) is not supported; floe implements the 'identity' normalizer (Llama, Mistral)`);
  }
  if (p.unkId < 0 || p.unkId >= V) throw new Error(`${where}: unk_id ${p.unkId} is outside the vocabulary (size ${V})`);
  return {
    pieces: p.pieces, scores: p.scores, types: p.types, unkId: p.unkId,
    addSpacePrefix: p.addDummyPrefix, prefixMode: 'sentencepiece', removeExtraWhitespaces: p.removeExtraWhitespaces,
  };
}

/** A special-token field of tokenizer_config.json: a string or an AddedToken-like object. */
function content(v: unknown): string | null {
  if (typeof v === 'string') return v;
  if (v !== null && typeof v === 'object' && typeof (v as { content?: unknown }).content === 'string') return (v as { content: string }).content;
  return null;
}

/**
 * The Tokenizer of an HF dir with tokenizer.model and no tokenizer.json (LlamaTokenizer): ids as the sentencepiece
 * library gives them; BOS/EOS from tokenizer_config.json (add_bos_token default true, add_eos_token default false).
 */
export async function loadSpmTokenizer(dir: string, config: TokenizerConfigJson | null, extraEosIds: readonly number[]): Promise<SpmTokenizer> {
  const path = join(dir, 'tokenizer.model');
  const proto = parseSpmModelProto(await readFile(path), path);
  const model = spmModelFromProto(proto, path);
  const V = proto.pieces.length;
  const idOf = (key: string, fallback: number): number | null => {
    const text = content(config?.[key]);
    if (text !== null) {
      const id = proto.pieces.indexOf(text);
      if (id < 0) throw new Error(`${join(dir, 'tokenizer_config.json')}: ${key} ${JSON.stringify(text)} is not a piece of ${path}`);
      return id;
    }
    return fallback >= 0 && fallback < V ? fallback : null;
  };
  const bosId = idOf('bos_token', proto.bosId);
  const eosId = idOf('eos_token', proto.eosId);
  const addBos = typeof config?.add_bos_token === 'boolean' ? config.add_bos_token : true;
  const addEos = typeof config?.add_eos_token === 'boolean' ? config.add_eos_token : false;
  const cfg: TokenizerConfigJson = { clean_up_tokenization_spaces: false, ...(config ?? {}) };
  if (bosId !== null) cfg.bos_token = proto.pieces[bosId];
  if (eosId !== null) cfg.eos_token = proto.pieces[eosId];
  const json = spmTokenizerJson(model, bosId, eosId, addBos, addEos, false);
  return new SpmTokenizer(model, path, json, cfg, { extraEosIds, addBos, addEos, configFile: join(dir, 'tokenizer_config.json') });
}
