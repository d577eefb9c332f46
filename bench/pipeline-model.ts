// The model of the pipeline benchmarks: --model (HF dir or GGUF) or --shape (a bench shape as q8_0 GGUF in bench/.cache,
// generated once), its config, and the dtype its activations cross between serving stages in.

import { join } from 'node:path';
import { GGML_F32, GGML_TO_DTYPE, ggmlTypeName, ggufToLlamaConfig, readGguf } from '../src/formats/gguf.js';
import { readHfConfig } from '../src/formats/hf-config.js';
import { isGgufPath } from '../src/formats/load.js';
import type { LlamaConfig } from '../src/model/config.js';
import type { ActDType } from '../src/parallel/pipeline.js';
import { ensureGguf } from './gguf-gen.js';
import { CACHE_DIR } from './harness/build.js';
import { SHAPES } from './shapes.js';

export interface BenchModel {
  readonly path: string;
  readonly config: LlamaConfig;
  readonly act: ActDType; // serving activations: f32 only for f32 weights (src/parallel/pipeline.ts)
  readonly weights: string; // dtype of the layers' linears
}

/** floe-brown unless --model or --shape says otherwise; both given is an error. */
export async function benchModel(script: string, model: string | undefined, shape: string | undefined): Promise<BenchModel> {
  if (model && shape) throw new Error(`${script}: give --model or --shape, not both`);
  if (shape && !SHAPES[shape]) throw new Error(`${script}: --shape ${shape} is not a bench shape (${Object.keys(SHAPES).join(', ')})`);
  const p = shape
    ? ensureGguf(CACHE_DIR, shape, SHAPES[shape]!.config, 'q8_0', (s) => process.stderr.write(s + '\n'))
    : model ?? join(import.meta.dirname, '..', 'models', 'floe-brown');
  if (isGgufPath(p)) {
    const g = await readGguf(p);
    const q = g.tensors.get('blk.0.attn_q.weight');
    if (!q) throw new Error(`${p}: no blk.0.attn_q.weight tensor`);
    return { path: p, config: ggufToLlamaConfig(g), act: q.type === GGML_F32 ? 'f32' : 'bf16', weights: GGML_TO_DTYPE[q.type] ?? ggmlTypeName(q.type) };
  }
  const hf = readHfConfig(p);
  return { path: p, config: hf.config, act: hf.torchDtype === 'float32' && !hf.quantization ? 'f32' : 'bf16', weights: hf.quantization ? 'fp8' : hf.torchDtype ?? '?' };
}
