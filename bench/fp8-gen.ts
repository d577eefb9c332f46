// Random-weight FP8 Llama checkpoints for benchmarks: an HF directory (config.json + safetensors, F8_E4M3 + per-row scales).
//
// D hidden, F ffn hidden, H heads, K kv heads, E head dim, V vocab, N rows, C columns.
// Layout follows compressed-tensors "channel" FP8 checkpoints: `<name>.weight` F8_E4M3 (N, C) and
// `<name>.weight_scale` F32 (N, 1). Unlike those, the embedding is FP8 too, to match llama.cpp Q8_0's token_embd.

import * as fs from 'node:fs';
import * as path from 'node:path';
import type { LlamaConfig } from '../src/model/config.js';
import { f32BitsToFp8, f32ToBits, FP8_E4M3_MAX } from '../src/tensor/codecs.js';
import { fillIndices, NORMALS, Rng, STD, TABLE } from './gguf-gen.js';

interface Planned {
  readonly name: string;
  readonly shape: readonly number[];
  readonly kind: 'fp8' | 'scale' | 'norm';
  readonly bytes: number;
}

function plan(c: LlamaConfig): Planned[] {
  const { hiddenSize: D, intermediateSize: F, numHeads: H, numKvHeads: K, headDim: E, vocabSize: V } = c;
  const out: Planned[] = [];
  const mat = (name: string, N: number, C: number): void => {
    out.push({ name: `${name}.weight`, shape: [N, C], kind: 'fp8', bytes: N * C });
    out.push({ name: `${name}.weight_scale`, shape: [N, 1], kind: 'scale', bytes: 4 * N });
  };
  const norm = (name: string): void => { out.push({ name, shape: [D], kind: 'norm', bytes: 4 * D }); };
  mat('model.embed_tokens', V, D);
  for (let i = 0; i < c.numLayers; i++) {
    const l = `model.layers.${i}.`;
    norm(l + 'input_layernorm.weight');
    mat(l + 'self_attn.q_proj', H * E, D);
    mat(l + 'self_attn.k_proj', K * E, D);
    mat(l + 'self_attn.v_proj', K * E, D);
    mat(l + 'self_attn.o_proj', D, H * E);
    norm(l + 'post_attention_layernorm.weight');
    mat(l + 'mlp.gate_proj', F, D);
    mat(l + 'mlp.up_proj', F, D);
    mat(l + 'mlp.down_proj', D, F);
  }
  norm('model.norm.weight');
  if (!c.tieWordEmbeddings) mat('lm_head', V, D);
  return out;
}

function hfConfig(c: LlamaConfig): Record<string, unknown> {
  const s = c.ropeScaling;
  return {
    architectures: ['LlamaForCausalLM'],
    model_type: 'llama',
    vocab_size: c.vocabSize,
    hidden_size: c.hiddenSize,
    intermediate_size: c.intermediateSize,
    num_hidden_layers: c.numLayers,
    num_attention_heads: c.numHeads,
    num_key_value_heads: c.numKvHeads,
    head_dim: c.headDim,
    hidden_act: 'silu',
    rms_norm_eps: c.rmsNormEps,
    rope_theta: c.ropeTheta,
    rope_scaling: s === null ? null : s.type === 'llama3'
      ? { rope_type: 'llama3', factor: s.factor, low_freq_factor: s.lowFreqFactor, high_freq_factor: s.highFreqFactor, original_max_position_embeddings: s.originalMaxPositionEmbeddings }
      : { rope_type: 'linear', factor: s.factor },
    max_position_embeddings: c.maxPositionEmbeddings,
    tie_word_embeddings: c.tieWordEmbeddings,
    torch_dtype: 'bfloat16',
    quantization_config: {
      quant_method: 'compressed-tensors',
      format: 'float-quantized',
      config_groups: { group_0: { targets: ['Linear'], weights: { num_bits: 8, type: 'float', strategy: 'channel', symmetric: true } } },
    },
  };
}

/**
 * Writes a random FP8 checkpoint for `c` into `dir` (built in `dir`.tmp, then renamed), streaming: codes are
 * N(0, σc²) with σc = 448/4.5 and every row scale is 0.02/σc, so weights are ~ N(0, 0.02²).
 */
export function writeRandomFp8Dir(c: LlamaConfig, dir: string, seed = 7): void {
  const tensors = plan(c);
  const tmp = `${dir}.tmp-${process.pid}`;
  fs.rmSync(tmp, { recursive: true, force: true });
  fs.mkdirSync(tmp, { recursive: true });
  const header: Record<string, unknown> = { __metadata__: { format: 'pt', producer: 'floe bench/fp8-gen.ts' } };
  let off = 0;
  for (const t of tensors) {
    header[t.name] = { dtype: t.kind === 'fp8' ? 'F8_E4M3' : 'F32', shape: t.shape, data_offsets: [off, off + t.bytes] };
    off += t.bytes;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (json.length % 8)) % 8); // data starts 8-aligned
  const sigmaC = FP8_E4M3_MAX / 4.5;
  const codes = new Uint8Array(TABLE);
  for (let i = 0; i < TABLE; i++) {
    const v = Math.max(-FP8_E4M3_MAX, Math.min(FP8_E4M3_MAX, NORMALS[i]! * sigmaC));
    codes[i] = f32BitsToFp8(f32ToBits(v));
  }
  const rowScale = STD / sigmaC;
  const rng = new Rng(seed);
  const fd = fs.openSync(path.join(tmp, 'model.safetensors'), 'w');
  try {
    const write = (b: Uint8Array): void => {
      let done = 0;
      while (done < b.length) done += fs.writeSync(fd, b, done, b.length - done);
    };
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(Buffer.byteLength(json)));
    write(len);
    write(Buffer.from(json, 'utf8'));
    const CHUNK = 1 << 20;
    const idx = new Uint16Array(CHUNK);
    const buf = new Uint8Array(CHUNK);
    for (const t of tensors) {
      if (t.kind === 'fp8') {
        for (let e = 0; e < t.bytes; e += CHUNK) {
          const n = Math.min(CHUNK, t.bytes - e);
          fillIndices(rng, idx.subarray(0, n));
          for (let i = 0; i < n; i++) buf[i] = codes[idx[i]!]!;
          write(buf.subarray(0, n));
        }
      } else if (t.kind === 'scale') {
        write(new Uint8Array(new Float32Array(t.shape[0]!).fill(rowScale).buffer));
      } else {
        const v = new Float32Array(t.shape[0]!);
        for (let i = 0; i < v.length; i++) v[i] = 1 + 0.1 * NORMALS[rng.next() & 0xffff]!; // norm gains ~ 1
        write(new Uint8Array(v.buffer));
      }
    }
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.writeFileSync(path.join(tmp, 'config.json'), JSON.stringify(hfConfig(c), null, 2) + '\n');
  fs.rmSync(dir, { recursive: true, force: true });
  fs.renameSync(tmp, dir);
}

/** The cached FP8 checkpoint directory for a shape, generating it when missing. */
export function ensureFp8Dir(cacheDir: string, shapeName: string, c: LlamaConfig, log: (s: string) => void = () => {}): string {
  const dir = path.join(cacheDir, `${shapeName}-fp8-v1`);
  if (!fs.existsSync(path.join(dir, 'config.json'))) {
    const t0 = performance.now();
    writeRandomFp8Dir(c, dir);
    log(`wrote ${dir} in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  }
  return dir;
}

/** Bytes of an fp8 model's matrices, row scales and norms (what one decode step streams). */
export function fp8WeightBytes(c: LlamaConfig): number {
  return plan(c).reduce((a, t) => a + t.bytes, 0);
}
