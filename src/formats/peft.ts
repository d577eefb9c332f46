// PEFT adapters: adapter_config.json + adapter_model.safetensors with PEFT key names and shapes, read and written.
//
// Keys: base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight (r, C) and .lora_B.weight (N, r).

import * as fs from 'node:fs';
import * as path from 'node:path';
import { decodeBf16, decodeF16 } from '../tensor/codecs.js';
import { asF32 } from '../tensor/tensor.js';
import type { LlamaConfig } from './llama-config.js';
import { showJson } from './json-show.js';
import { readSafetensorsSync, writeFileAtomic, writeSafetensors, type StTensor, type StWriteTensor } from './safetensors.js';

export type LoraTarget = 'q' | 'k' | 'v' | 'o' | 'gate' | 'up' | 'down';
export const LORA_TARGETS: readonly LoraTarget[] = ['q', 'k', 'v', 'o', 'gate', 'up', 'down'];

/** HF module path of each target inside a decoder layer (PEFT target_modules use the last part). */
export const LORA_MODULE = {
  q: 'self_attn.q_proj', k: 'self_attn.k_proj', v: 'self_attn.v_proj', o: 'self_attn.o_proj',
  gate: 'mlp.gate_proj', up: 'mlp.up_proj', down: 'mlp.down_proj',
} as const satisfies Record<LoraTarget, string>;

export interface LoraConfig {
  readonly rank: number; // r
  readonly alpha: number;
  readonly targets: readonly LoraTarget[];
  readonly rslora: boolean;
  readonly dropout: number; // on the adapter's input, training only
}

/** [N, C] of a target's weight. */
export function loraDims(cfg: LlamaConfig, t: LoraTarget): [number, number] {
  const { hiddenSize: D, intermediateSize: F, numHeads: H, numKvHeads: K, headDim: E } = cfg;
  switch (t) {
    case 'q': return [H * E, D];
    case 'k': case 'v': return [K * E, D];
    case 'o': return [D, H * E];
    case 'gate': case 'up': return [F, D];
    case 'down': return [D, F];
  }
}

/** One adapted linear's factors as plain data (the model's LoraLinear has this shape too). */
export interface PeftLinear {
  readonly N: number;
  readonly C: number;
  readonly rank: number; // r
  readonly a: Float32Array; // (r, C)
  readonly b: Float32Array; // (N, r)
}

/** A whole adapter as plain data: layers[i][target] when that target is adapted. */
export interface PeftAdapter {
  readonly config: LoraConfig;
  readonly layers: ReadonlyArray<Partial<Record<LoraTarget, PeftLinear>>>;
}

export const PEFT_CONFIG = 'adapter_config.json';
export const PEFT_WEIGHTS = 'adapter_model.safetensors';

/** PEFT's task types floe writes: a causal LM's adapter, or an embedding model's (contrastive training). */
export type PeftTaskType = 'CAUSAL_LM' | 'FEATURE_EXTRACTION';

/**
 * The adapter key PEFT saves: `base_model.model.` + the module's path in the wrapped model, which is
 * LlamaForCausalLM (`model.layers.…`) for CAUSAL_LM and LlamaModel (`layers.…`, AutoModel) for FEATURE_EXTRACTION.
 */
export function peftKey(layer: number, t: LoraTarget, which: 'A' | 'B', taskType: PeftTaskType = 'CAUSAL_LM'): string {
  return `base_model.model.${taskType === 'FEATURE_EXTRACTION' ? '' : 'model.'}layers.${layer}.${LORA_MODULE[t]}.lora_${which}.weight`;
}

/** adapter_config.json as PEFT writes it for a LoRA on a causal LM (or, with FEATURE_EXTRACTION, an embedder). */
export function peftConfigJson(c: LoraConfig, baseModel: string | null, taskType: PeftTaskType = 'CAUSAL_LM'): Record<string, unknown> {
  return {
    alpha_pattern: {}, auto_mapping: null, base_model_name_or_path: baseModel, bias: 'none', fan_in_fan_out: false,
    inference_mode: true, init_lora_weights: true, layers_pattern: null, layers_to_transform: null,
    lora_alpha: c.alpha, lora_dropout: c.dropout, modules_to_save: null, peft_type: 'LORA', r: c.rank,
    rank_pattern: {}, revision: null, target_modules: c.targets.map((t) => LORA_MODULE[t].split('.')[1]!),
    task_type: taskType, use_dora: false, use_rslora: c.rslora,
  };
}

/** Write an adapter directory (each file atomically); tensors f32. */
export function writePeftAdapter(dir: string, adapter: PeftAdapter, baseModel: string | null = null, taskType: PeftTaskType = 'CAUSAL_LM'): void {
  fs.mkdirSync(dir, { recursive: true });
  const tensors: Record<string, StWriteTensor> = {};
  adapter.layers.forEach((lay, l) => {
    for (const t of LORA_TARGETS) {
      const lin = lay[t];
      if (!lin) continue;
      tensors[peftKey(l, t, 'A', taskType)] = { dtype: 'F32', shape: [lin.rank, lin.C], data: lin.a };
      tensors[peftKey(l, t, 'B', taskType)] = { dtype: 'F32', shape: [lin.N, lin.rank], data: lin.b };
    }
  });
  writeSafetensors(path.join(dir, PEFT_WEIGHTS), tensors, { format: 'pt' });
  writeFileAtomic(path.join(dir, PEFT_CONFIG), [new TextEncoder().encode(JSON.stringify(peftConfigJson(adapter.config, baseModel, taskType), null, 2) + '\n')]);
}

function values(t: StTensor): Float32Array {
  switch (t.dtype) {
    case 'F32': return asF32(t.data).slice();
    case 'BF16': { const o = new Float32Array(t.data.byteLength / 2); decodeBf16(t.data, o); return o; }
    case 'F16': { const o = new Float32Array(t.data.byteLength / 2); decodeF16(t.data, o); return o; }
    default: throw new Error(`${t.file}: adapter tensor "${t.name}" has dtype ${t.dtype}; expected F32, BF16 or F16`);
  }
}

/** values(t), every one finite: one NaN or Inf factor made every token's logits NaN (greedy then picked id 0), silently. */
function finiteValues(t: StTensor): Float32Array {
  const v = values(t);
  for (let i = 0; i < v.length; i++) {
    if (!Number.isFinite(v[i]!)) {
      const C = t.shape[1]!;
      throw new Error(`${t.file}: adapter tensor ${showJson(t.name, 200)} holds ${v[i]} at [${Math.floor(i / C)}, ${i % C}]; LoRA factors must be finite (a diverged fine-tune?)`);
    }
  }
  return v;
}

/** PEFT LoraConfig's defaults for a config that leaves r / lora_alpha out. */
const PEFT_DEFAULT_R = 8;
const PEFT_DEFAULT_ALPHA = 8;

const MODULE_TO_TARGET = new Map<string, LoraTarget>(LORA_TARGETS.map((t) => [LORA_MODULE[t], t]));

/**
 * Why adapter_config.json's target_modules / layers_to_transform do not select module `key` (its path in the base
 * model, e.g. model.layers.0.self_attn.q_proj) as PEFT's check_target_module_exists reads them, or null when they do
 * (or when a regex is one JavaScript cannot compile: not checked). PEFT creates LoRA layers only where they select, so
 * a factor elsewhere is one PEFT would not load; floe applied it and the output differed from PEFT's.
 */
function notTargeted(j: Record<string, unknown>, key: string, layer: number, cfgPath: string): string | null {
  const tm = j.target_modules ?? ['q_proj', 'v_proj']; // PEFT's default for llama (TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING)
  let hit: boolean;
  if (typeof tm === 'string') {
    if (tm === 'all-linear') hit = true;
    else {
      let re: RegExp;
      try { re = new RegExp(`^(?:${tm})$`); } catch { return null; }
      hit = re.test(key);
    }
  } else if (Array.isArray(tm) && tm.every((t) => typeof t === 'string')) {
    hit = tm.some((t: string) => key === t || key.endsWith(`.${t}`));
  } else {
    throw new Error(`${cfgPath}: "target_modules" must be a module name pattern or a list of module names, got ${showJson(tm, 80)}`);
  }
  const where = `target_modules ${showJson(tm, 80)}${j.target_modules === undefined || j.target_modules === null ? " (PEFT's default for llama: the config has none)" : ''}`;
  if (!hit) return where;
  const ltt = j.layers_to_transform;
  if (ltt !== undefined && ltt !== null) {
    const layers = typeof ltt === 'number' ? [ltt] : ltt;
    if (!Array.isArray(layers) || !layers.every((x) => Number.isInteger(x))) throw new Error(`${cfgPath}: "layers_to_transform" must be a layer index or a list of them, got ${showJson(ltt, 80)}`);
    if (!layers.includes(layer)) return `layers_to_transform ${showJson(ltt, 80)}`;
  }
  return null;
}

/** Read a PEFT LoRA adapter's files for a model with config `cfg`; throws naming the file, key, expected vs got. */
export function readPeftFiles(dir: string, cfg: LlamaConfig): PeftAdapter {
  const cfgPath = path.join(dir, PEFT_CONFIG);
  let text: string;
  try {
    text = fs.readFileSync(cfgPath, 'utf8');
  } catch (e) {
    // a `floe finetune --out DIR` run directory holds its adapter in DIR/final (and checkpoints beside it)
    const hint = fs.existsSync(path.join(dir, 'final', PEFT_CONFIG)) ? `; ${dir} is a fine-tuning run: its adapter is ${path.join(dir, 'final')}` : '';
    throw new Error(`${cfgPath}: cannot read adapter config: ${(e as Error).message}${hint}`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (e) {
    throw new Error(`${cfgPath}: bad JSON: ${(e as Error).message}`);
  }
  // null, a list or a number would read as an empty config: PEFT's defaults (r = 8) checked against weights of another r
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new Error(`${cfgPath}: adapter config must be a JSON object, got ${showJson(parsed, 40)}`);
  const j = parsed as Record<string, unknown>;
  if (j.peft_type !== undefined && j.peft_type !== 'LORA') throw new Error(`${cfgPath}: peft_type is ${showJson(j.peft_type)}; floe reads LORA adapters`);
  if (j.use_dora === true) throw new Error(`${cfgPath}: DoRA adapters (use_dora) are not supported`);
  if (j.fan_in_fan_out === true) throw new Error(`${cfgPath}: fan_in_fan_out adapters are not supported (Llama linears are not Conv1D)`);
  for (const k of ['rank_pattern', 'alpha_pattern'] as const) {
    if (j[k] && typeof j[k] === 'object' && Object.keys(j[k] as object).length > 0) throw new Error(`${cfgPath}: per-module ${k} is not supported`);
  }
  // features that change the model beyond W + s·BA: refused, not ignored (the output would silently differ from PEFT's)
  if (Array.isArray(j.modules_to_save) && j.modules_to_save.length > 0) {
    throw new Error(`${cfgPath}: modules_to_save (${showJson(j.modules_to_save)}: whole modules trained beside the adapter) is not supported`);
  }
  if (j.bias !== undefined && j.bias !== null && j.bias !== 'none') throw new Error(`${cfgPath}: bias ${showJson(j.bias)} is not supported (floe reads bias "none" adapters)`);
  if (j.lora_bias === true) throw new Error(`${cfgPath}: lora_bias (a bias on lora_B) is not supported`);
  if (j.layer_replication !== undefined && j.layer_replication !== null) throw new Error(`${cfgPath}: layer_replication (a deeper model made of repeated layers) is not supported`);
  // an adapter made for another head (a classifier, seq2seq) would run on the LM head as if it were a causal LM's
  if (j.task_type !== undefined && j.task_type !== null && j.task_type !== 'CAUSAL_LM' && j.task_type !== 'FEATURE_EXTRACTION') {
    throw new Error(`${cfgPath}: task_type ${showJson(j.task_type)} is not supported (floe applies adapters of task_type CAUSAL_LM, or FEATURE_EXTRACTION for embeddings)`);
  }
  if (j.use_rslora !== undefined && typeof j.use_rslora !== 'boolean') throw new Error(`${cfgPath}: "use_rslora" must be true or false, got ${showJson(j.use_rslora)}`);
  const rank = j.r ?? PEFT_DEFAULT_R; // LoraConfig's defaults: r = 8, lora_alpha = 8
  const alpha = j.lora_alpha ?? PEFT_DEFAULT_ALPHA;
  if (typeof rank !== 'number' || !Number.isInteger(rank) || rank < 1) throw new Error(`${cfgPath}: "r" must be an integer >= 1, got ${showJson(rank)}`);
  if (typeof alpha !== 'number' || !Number.isFinite(alpha) || alpha <= 0) throw new Error(`${cfgPath}: "lora_alpha" must be a number > 0, got ${showJson(alpha)}`);
  const dropout = j.lora_dropout ?? 0;
  if (typeof dropout !== 'number' || !(dropout >= 0 && dropout < 1)) throw new Error(`${cfgPath}: "lora_dropout" must be a number in [0, 1), got ${showJson(dropout)}`);
  const weightsPath = path.join(dir, PEFT_WEIGHTS);
  if (!fs.existsSync(weightsPath)) throw new Error(`${dir}: no ${PEFT_WEIGHTS} (adapter_model.bin is not supported: convert it to safetensors)`);
  const st = readSafetensorsSync(weightsPath);
  const layers: Partial<Record<LoraTarget, PeftLinear>>[] = Array.from({ length: cfg.numLayers }, () => ({}));
  const pending = new Map<string, { a?: Float32Array; b?: Float32Array; layer: number; t: LoraTarget }>();
  // what a factor shaped for another model says (the model's side of it, not r, differs)
  const otherBase = `: an adapter of another base model${typeof j.base_model_name_or_path === 'string' ? ` (${showJson(j.base_model_name_or_path, 200)} in adapter_config.json)` : ''}, not of this one`;
  // a causal LM's keys (base_model.model.model.layers) or an AutoModel's (base_model.model.layers: FEATURE_EXTRACTION)
  const re = /^base_model\.model\.(?:model\.)?layers\.(\d+)\.(self_attn\.[qkvo]_proj|mlp\.(?:gate|up|down)_proj)\.lora_([AB])(?:\.default)?\.weight$/;
  for (const [name, t] of st.tensors) {
    const m = re.exec(name);
    if (!m) throw new Error(`${weightsPath}: unexpected tensor ${showJson(name, 200)} (expected PEFT LoRA keys base_model.model.model.layers.{i}.<module>.lora_A/B.weight, or base_model.model.layers.… for an AutoModel base)`);
    const layer = Number(m[1]);
    const target = MODULE_TO_TARGET.get(m[2]!)!;
    if (layer >= cfg.numLayers) throw new Error(`${weightsPath}: "${name}" is for layer ${layer}, the model has ${cfg.numLayers} layers${otherBase}`);
    const moduleKey = name.slice('base_model.model.'.length).replace(/\.lora_[AB](?:\.default)?\.weight$/, '');
    const why = notTargeted(j, moduleKey, layer, cfgPath);
    if (why !== null) throw new Error(`${weightsPath}: "${name}" adapts ${moduleKey}, which ${cfgPath} does not select (${why}); PEFT would not load this factor`);
    const [N, C] = loraDims(cfg, target);
    const want = m[3] === 'A' ? [rank, C] : [N, rank];
    if (t.shape.length !== 2 || t.shape[0] !== want[0] || t.shape[1] !== want[1]) {
      // the model's side of the factor (A's columns, B's rows) differs: the adapter was trained on another base
      const other = t.shape.length === 2 && (m[3] === 'A' ? t.shape[1] !== C : t.shape[0] !== N);
      // else only r differs: the weights were saved with another r than adapter_config.json says (or defaults to)
      const why = other ? otherBase : t.shape.length !== 2 ? '' : `: ${cfgPath} says r = ${rank}${j.r === undefined || j.r === null ? ` (PEFT's default: it has no "r")` : ''}, the weights have another rank`;
      throw new Error(`${weightsPath}: "${name}" has shape [${t.shape.join(', ')}], expected [${want.join(', ')}] (r=${rank})${why}`);
    }
    const key = `${layer}.${target}`;
    const e = pending.get(key) ?? { layer, t: target };
    if (m[3] === 'A') e.a = finiteValues(t); else e.b = finiteValues(t);
    pending.set(key, e);
  }
  const targets = new Set<LoraTarget>();
  for (const [key, e] of pending) {
    if (!e.a || !e.b) throw new Error(`${weightsPath}: layer ${key} has lora_${e.a ? 'A' : 'B'} but no lora_${e.a ? 'B' : 'A'}`);
    const [N, C] = loraDims(cfg, e.t);
    layers[e.layer]![e.t] = { N, C, rank, a: e.a, b: e.b };
    targets.add(e.t);
  }
  if (targets.size === 0) throw new Error(`${weightsPath}: no LoRA tensors`);
  const config: LoraConfig = {
    rank, alpha, rslora: j.use_rslora === true, dropout,
    targets: LORA_TARGETS.filter((t) => targets.has(t)),
  };
  return { config, layers };
}
