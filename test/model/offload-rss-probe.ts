// Child process for test/model/offload-cli.test.ts. argv: DIR make|stream|stream-bf16|resident.
// make: write a random f32 Llama (16 layers, ~155 MB) to DIR. stream / resident: open it (streamed within a budget of
// about a fifth of the model, or all resident), generate a few tokens, print baseline and peak RSS with the budget.
// stream-bf16: the same with --dtype bf16 (every matrix converted while loading), the budget in bf16 bytes.

import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { writeSafetensors, type StWriteTensor } from '../../src/formats/safetensors.js';
import { generate } from '../../src/model/generate.js';
import { openModel } from '../../src/model/open.js';

const [dir, mode] = [process.argv[2]!, process.argv[3]!];
const S = { D: 512, F: 1024, H: 8, K: 4, E: 64, V: 1024, L: 16 };
const status = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(readFileSync('/proc/self/status', 'utf8'))![1]) * 1024;

if (mode === 'make') {
  mkdirSync(dir, { recursive: true });
  const t: Record<string, StWriteTensor> = {};
  let x = (Math.random() * 2 ** 31) | 1; // xorshift32: fast enough for 76M values
  const mat = (n: number, c: number): StWriteTensor => {
    const v = new Float32Array(n * c);
    const k = 2 / Math.sqrt(c) / 2 ** 32;
    for (let i = 0; i < v.length; i++) { x ^= x << 13; x ^= x >>> 17; x ^= x << 5; v[i] = (x >>> 0) * k - 1 / Math.sqrt(c); }
    return { dtype: 'F32', shape: [n, c], data: v };
  };
  const ones = (n: number): StWriteTensor => ({ dtype: 'F32', shape: [n], data: new Float32Array(n).fill(1) });
  t['model.embed_tokens.weight'] = mat(S.V, S.D);
  t['lm_head.weight'] = mat(S.V, S.D);
  t['model.norm.weight'] = ones(S.D);
  for (let l = 0; l < S.L; l++) {
    const p = `model.layers.${l}.`;
    t[p + 'self_attn.q_proj.weight'] = mat(S.H * S.E, S.D); t[p + 'self_attn.k_proj.weight'] = mat(S.K * S.E, S.D);
    t[p + 'self_attn.v_proj.weight'] = mat(S.K * S.E, S.D); t[p + 'self_attn.o_proj.weight'] = mat(S.D, S.H * S.E);
    t[p + 'mlp.gate_proj.weight'] = mat(S.F, S.D); t[p + 'mlp.up_proj.weight'] = mat(S.F, S.D); t[p + 'mlp.down_proj.weight'] = mat(S.D, S.F);
    t[p + 'input_layernorm.weight'] = ones(S.D); t[p + 'post_attention_layernorm.weight'] = ones(S.D);
  }
  writeSafetensors(join(dir, 'model.safetensors'), t);
  writeFileSync(join(dir, 'config.json'), JSON.stringify({
    architectures: ['LlamaForCausalLM'], hidden_size: S.D, intermediate_size: S.F, num_attention_heads: S.H, num_key_value_heads: S.K, head_dim: S.E,
    num_hidden_layers: S.L, vocab_size: S.V, max_position_embeddings: 256, rms_norm_eps: 1e-5, rope_theta: 10000, tie_word_embeddings: false,
  }));
  process.exit(0);
}

const bf16 = mode === 'stream-bf16';
const bytes = bf16 ? 2 : 4; // a matrix value as held; norms stay f32
const perLayer = bytes * (2 * S.H * S.E * S.D + 2 * S.K * S.E * S.D + 3 * S.F * S.D);
const other = bytes * 2 * S.V * S.D + 4 * (S.D + 2 * S.L * S.D);
const budget = other + 3 * perLayer + perLayer / 2; // 3 staging slots, no room for a resident layer
const baseline = status('VmRSS');
const m = await openModel(dir, {
  backend: 'native', tokenizerOptional: true, load: bf16 ? { dtype: 'bf16' } : undefined, offload: mode.startsWith('stream') ? { weightsMemory: budget } : undefined,
});
const prompt = Array.from({ length: 8 }, (_, i) => (i * 37) % S.V);
generate(m.model, prompt, { maxTokens: 6, sampling: { temperature: 0 }, kvDtype: 'f32' });
// stated overhead: KV blocks (16 tokens each) for 14 tokens, the workspace and logits, and 10 MiB of JS heap / code
// growth (measured: 1-4 MiB; a converted copy per streamed tensor left to the collector overshot by 22-38 MiB)
const kv = 2 * S.L * S.K * S.E * 4 * 16;
const ws = 4 * 8 * (3 * S.D + 2 * S.H * S.E + 2 * S.K * S.E + 2 * S.F) + 4 * 8 * S.V;
const overhead = kv + ws + (10 << 20);
process.stdout.write(JSON.stringify({
  baseline, peak: status('VmHWM'), modelBytes: perLayer * S.L + other, budget, overhead, streamed: m.model.layerStream?.stats.streamedLayers ?? 0,
}) + '\n');
