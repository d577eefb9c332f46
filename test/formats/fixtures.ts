// Test fixtures: tiny random Llama checkpoints written as HF directories (config.json + safetensors).

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { encodeBf16, encodeF16 } from '../../src/tensor/codecs.js';
import { writeSafetensors, writeSafetensorsSharded, type StWriteTensor } from '../../src/formats/safetensors.js';

/** Deterministic PRNG (mulberry32). */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function randn(n: number, r: () => number, scale = 1): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = (r() * 2 - 1) * scale;
  return out;
}

export function tmpDir(prefix = 'floe-fmt-'): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

export interface TinyOptions {
  readonly vocab?: number;
  readonly hidden?: number;
  readonly ffn?: number;
  readonly layers?: number;
  readonly heads?: number;
  readonly kvHeads?: number;
  readonly headDim?: number;
  readonly tied?: boolean;
  readonly dtype?: 'F32' | 'F16' | 'BF16';
  /** A tensor's dtype where it is not `dtype` (a checkpoint of mixed dtypes); undefined: `dtype`. */
  readonly dtypeOf?: (name: string) => 'F32' | 'F16' | 'BF16' | undefined;
  readonly seed?: number;
  readonly shardBytes?: number; // write sharded with an index when set
  readonly extraConfig?: Record<string, unknown>;
}

export interface TinyModel {
  readonly dir: string;
  readonly config: Record<string, unknown>;
  readonly values: Map<string, { shape: number[]; f32: Float32Array }>; // f32 source values (before dtype encode)
  readonly tensors: Record<string, StWriteTensor>; // what was written
}

/** Writes a random tiny Llama HF checkpoint into a new temp dir. */
export function makeTinyHf(o: TinyOptions = {}): TinyModel {
  const V = o.vocab ?? 64, D = o.hidden ?? 32, F = o.ffn ?? 64, L = o.layers ?? 2;
  const H = o.heads ?? 4, K = o.kvHeads ?? 2, E = o.headDim ?? D / H;
  const tied = o.tied ?? false;
  const r = rng(o.seed ?? 1);
  const dtype = o.dtype ?? 'F32';
  const shapes: [string, number[]][] = [['model.embed_tokens.weight', [V, D]]];
  for (let i = 0; i < L; i++) {
    const l = `model.layers.${i}`;
    shapes.push([`${l}.self_attn.q_proj.weight`, [H * E, D]], [`${l}.self_attn.k_proj.weight`, [K * E, D]],
      [`${l}.self_attn.v_proj.weight`, [K * E, D]], [`${l}.self_attn.o_proj.weight`, [D, H * E]],
      [`${l}.mlp.gate_proj.weight`, [F, D]], [`${l}.mlp.up_proj.weight`, [F, D]], [`${l}.mlp.down_proj.weight`, [D, F]],
      [`${l}.input_layernorm.weight`, [D]], [`${l}.post_attention_layernorm.weight`, [D]]);
  }
  shapes.push(['model.norm.weight', [D]]);
  if (!tied) shapes.push(['lm_head.weight', [V, D]]);
  const values = new Map<string, { shape: number[]; f32: Float32Array }>();
  const tensors: Record<string, StWriteTensor> = {};
  for (const [name, shape] of shapes) {
    const f32 = randn(shape.reduce((a, b) => a * b, 1), r, 0.5);
    values.set(name, { shape, f32 });
    const d = o.dtypeOf?.(name) ?? dtype;
    const data = d === 'F32' ? f32 : d === 'F16' ? encodeF16(f32) : encodeBf16(f32);
    tensors[name] = { dtype: d, shape, data };
  }
  const config: Record<string, unknown> = {
    architectures: ['LlamaForCausalLM'], model_type: 'llama', vocab_size: V, hidden_size: D, intermediate_size: F,
    num_hidden_layers: L, num_attention_heads: H, num_key_value_heads: K, head_dim: E, rms_norm_eps: 1e-5,
    rope_theta: 500000, max_position_embeddings: 4096, tie_word_embeddings: tied, bos_token_id: 1, eos_token_id: [2, 3],
    rope_scaling: { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 256 },
    torch_dtype: dtype === 'F32' ? 'float32' : dtype === 'F16' ? 'float16' : 'bfloat16',
    ...o.extraConfig,
  };
  const dir = tmpDir();
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config, null, 2));
  if (o.shardBytes) writeSafetensorsSharded(dir, tensors, { maxShardBytes: o.shardBytes, metadata: { format: 'pt' } });
  else writeSafetensors(path.join(dir, 'model.safetensors'), tensors, { format: 'pt' });
  return { dir, config, values, tensors };
}
