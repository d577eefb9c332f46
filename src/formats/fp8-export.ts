// FP8 export: quantize the linear layers of a model to E4M3 with f32 scales and write a standard FP8 HF checkpoint.
//
// Two layouts, exactly as floe's loader and the test fixtures (test/fixtures/models/fp8_block, fp8_channel) have them:
//   block:   quantization_config {quant_method "fp8", fmt "e4m3", weight_block_size [b, b]}; per linear
//            `<name>.weight` F8_E4M3 (N, C) + `<name>.weight_scale_inv` F32 (ceil(N/b), ceil(C/b))   (DeepSeek / Qwen FP8)
//   per-row: quantization_config {quant_method "compressed-tensors", format "float-quantized", strategy "channel"};
//            per linear `<name>.weight` F8_E4M3 (N, C) + `<name>.weight_scale` F32 (N, 1)            (llm-compressor)
// Dequantized weight = fp8(code) * scale of its block / row. Everything else is written as bf16.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { dequantizeRow, encodeBf16 } from '../tensor/codecs.js';
import { readHfConfig } from './hf-config.js';
import { convertsToBf16, convertWeightBf16, LINEAR_WEIGHT, loadModel, quantizeWeightFp8 } from './load.js';
import { writeFileAtomic, writeSafetensors, writeSafetensorsSharded, type StWriteTensor } from './safetensors.js';

/** How weights are scaled: one scale per (b × b) block, or one per output row. */
export type Fp8Scheme = { readonly kind: 'block'; readonly block: number } | { readonly kind: 'per-row' };

/** fp8 scale block of `scheme` for a weight with C columns. */
export function fp8BlockOf(scheme: Fp8Scheme, C: number): [number, number] {
  return scheme.kind === 'block' ? [scheme.block, scheme.block] : [1, C];
}

export interface QuantizeModelOptions {
  readonly scheme: Fp8Scheme;
  readonly quantizeHead?: boolean; // lm_head too (untied models)
  readonly quantizeEmbed?: boolean; // embed_tokens too (with tied embeddings this is also the head)
  /** Shard the weights above this many bytes (default 5 GiB, as transformers does); one file below it. */
  readonly maxShardBytes?: number;
}

export interface QuantizeModelResult {
  readonly quantized: string[]; // names written as fp8
  readonly files: string[]; // safetensors files written
  readonly bytesIn: number; // weight bytes of the source
  readonly bytesOut: number; // weight + scale bytes written
}

const COPY_FILES = ['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'generation_config.json', 'chat_template.jinja', 'chat_template.json'];

/** quantization_config block of config.json for the scheme (the fixtures' layouts, key for key); `ignore`: unquantized Linear modules. */
export function fp8QuantizationConfig(scheme: Fp8Scheme, ignore: readonly string[]): Record<string, unknown> {
  if (scheme.kind === 'block') return { activation_scheme: 'dynamic', fmt: 'e4m3', quant_method: 'fp8', weight_block_size: [scheme.block, scheme.block] };
  return {
    config_groups: {
      group_0: {
        format: 'float-quantized', input_activations: null, output_activations: null, targets: ['Linear'],
        weights: {
          actorder: null, block_structure: null, dynamic: false, group_size: null, num_bits: 8, observer: 'minmax',
          observer_kwargs: {}, strategy: 'channel', symmetric: true, type: 'float',
        },
      },
    },
    format: 'float-quantized', global_compression_ratio: null, ignore: [...ignore], kv_cache_scheme: null,
    quant_method: 'compressed-tensors', quantization_status: 'compressed',
  };
}

/**
 * Reads the HF model in `inDir` (f32 / f16 / bf16 weights), writes `outDir` with the linear layers (and, if asked, head
 * and embeddings) in E4M3 and everything else in bf16, plus config.json with quantization_config and the tokenizer,
 * generation config and chat template. Files are written atomically, config.json last (a failed run leaves none);
 * large models are sharded.
 */
export async function quantizeModelDir(inDir: string, outDir: string, opts: QuantizeModelOptions): Promise<QuantizeModelResult> {
  if (!fs.existsSync(inDir) || !fs.statSync(inDir).isDirectory()) throw new Error(`${inDir}: quantize reads an HF model directory (config.json + safetensors)`);
  if (fs.existsSync(outDir) && !fs.statSync(outDir).isDirectory()) throw new Error(`--out ${outDir} is a file; give a directory for the FP8 model`);
  const same = fs.existsSync(outDir) ? fs.realpathSync(inDir) === fs.realpathSync(outDir) : path.resolve(inDir) === path.resolve(outDir);
  if (same) throw new Error(`--out ${outDir} is the input directory; write the FP8 model elsewhere`);
  const { scheme } = opts;
  if (scheme.kind === 'block' && !(Number.isInteger(scheme.block) && scheme.block > 0)) throw new Error(`fp8 block size must be a positive integer, got ${scheme.block}`);
  const srcConfigFile = path.join(inDir, 'config.json');
  if (!fs.existsSync(srcConfigFile)) throw new Error(`${inDir}: no config.json; quantize reads an HF model directory (config.json + safetensors)`);
  // readHfConfig's checks first: a raw JSON.parse named no file ('Unexpected end of JSON input') and read null as a TypeError
  readHfConfig(inDir);
  const srcConfig = JSON.parse(fs.readFileSync(srcConfigFile, 'utf8')) as Record<string, unknown>;
  if (srcConfig.quantization_config !== undefined && srcConfig.quantization_config !== null) {
    throw new Error(`${srcConfigFile}: the model is already quantized (quantization_config present); quantize an f32 / f16 / bf16 model`);
  }
  const m = await loadModel(inDir);
  try {
    const tied = m.config.tieWordEmbeddings && !m.tensors.has('lm_head.weight');
    if (opts.quantizeHead && tied && !opts.quantizeEmbed) {
      throw new Error(`${inDir}: the head is tied to the embeddings (tie_word_embeddings, no lm_head.weight); use --quantize-embed to quantize both`);
    }
    const wantFp8 = (name: string): boolean =>
      LINEAR_WEIGHT.test(name) || (!!opts.quantizeHead && name === 'lm_head.weight') || (!!opts.quantizeEmbed && name === 'model.embed_tokens.weight');
    const out: Record<string, StWriteTensor> = {};
    const quantized: string[] = [];
    let bytesIn = 0;
    let bytesOut = 0;
    for (const [name, t] of m.tensors) {
      bytesIn += t.data.byteLength + (t.scale?.byteLength ?? 0);
      if (t.dtype === 'fp8_e4m3' || t.dtype === 'q8_0') throw new Error(`${inDir}: tensor "${name}" is already ${t.dtype}; quantize an f32 / f16 / bf16 model`);
      if (t.dtype === 'i32') { out[name] = { dtype: 'I32', shape: t.shape, data: t.data }; continue; }
      if (wantFp8(name)) {
        const q = quantizeWeightFp8(t, `${inDir}: ${name}`, fp8BlockOf(scheme, t.cols));
        const stem = name.replace(/\.weight$/, '');
        out[name] = { dtype: 'F8_E4M3', shape: t.shape, data: q.data };
        out[scheme.kind === 'block' ? `${stem}.weight_scale_inv` : `${stem}.weight_scale`] = {
          dtype: 'F32',
          shape: scheme.kind === 'block' ? [Math.ceil(t.rows / scheme.block), Math.ceil(t.cols / scheme.block)] : [t.rows, 1],
          data: q.scale!,
        };
        quantized.push(name);
      } else if (t.dtype === 'bf16') {
        out[name] = { dtype: 'BF16', shape: t.shape, data: t.data };
      } else if (convertsToBf16(t)) {
        // the embedding and head (the largest tensors), natively when the addon is built: the same bytes as encodeBf16
        out[name] = { dtype: 'BF16', shape: t.shape, data: convertWeightBf16(t, `${inDir}: ${name}`).data };
      } else {
        const values = new Float32Array(t.numel);
        for (let r = 0; r < t.rows; r++) dequantizeRow(t, r, values.subarray(r * t.cols, (r + 1) * t.cols));
        out[name] = { dtype: 'BF16', shape: t.shape, data: encodeBf16(values) };
      }
    }
    for (const t of Object.values(out)) bytesOut += t.data.byteLength;
    if (quantized.length === 0) throw new Error(`${inDir}: no linear layer weights (model.layers.N.{self_attn,mlp}.*_proj.weight) to quantize`);

    fs.mkdirSync(outDir, { recursive: true });
    // drop an earlier export's config.json (no model loads from outDir until this one's is written, last) and its
    // stale weights
    fs.rmSync(path.join(outDir, 'config.json'), { force: true });
    for (const f of fs.readdirSync(outDir)) if (/^model.*\.safetensors(\.index\.json)?$/.test(f)) fs.rmSync(path.join(outDir, f));
    const maxShard = opts.maxShardBytes ?? 5 * 2 ** 30;
    const files = bytesOut > maxShard
      ? writeSafetensorsSharded(outDir, out, { maxShardBytes: maxShard, metadata: { format: 'pt' } })
      : (writeSafetensors(path.join(outDir, 'model.safetensors'), out, { format: 'pt' }), [path.join(outDir, 'model.safetensors')]);

    const ignore = opts.quantizeHead || (tied && opts.quantizeEmbed) ? [] : ['lm_head'];
    const config: Record<string, unknown> = { ...srcConfig, quantization_config: fp8QuantizationConfig(scheme, ignore) };
    if ('dtype' in config) config.dtype = 'bfloat16';
    if ('torch_dtype' in config || !('dtype' in config)) config.torch_dtype = 'bfloat16';
    for (const f of COPY_FILES) {
      const src = path.join(inDir, f);
      if (fs.existsSync(src)) writeFileAtomic(path.join(outDir, f), [fs.readFileSync(src)]);
    }
    // last: a run that fails before here leaves a directory without config.json, which no loader takes for a model
    writeFileAtomic(path.join(outDir, 'config.json'), [new TextEncoder().encode(JSON.stringify(config, null, 2) + '\n')]);
    return { quantized, files, bytesIn, bytesOut };
  } finally {
    m.dispose();
  }
}
