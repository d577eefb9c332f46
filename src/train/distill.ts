// `floe distill` as a library call: a teacher pass into a teacher cache (reused when it matches), then the trainer
// (`finetune`, LoRA or full) on the student with (1 - ratio) · CE + ratio · T² · D(teacher ‖ student) on the cached top-k;
// with on-policy λ > 0 (on-policy.ts) a share λ of the micro-batches are the student's own samples, scored by the teacher in memory.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { selectBackend } from '../backend/select.js';
import { loadChatTemplate } from '../formats/chat-template.js';
import { readHfConfig } from '../formats/hf-config.js';
import { loadTokenizer } from '../formats/tokenizer.js';
import { loadSamples } from './data.js';
import { checkKdConfig, type KdLossConfig, type KdLossKind } from './kd-loss.js';
import { buildTeacherCache, bytesPerToken, CachedKdLoss, checkCacheMatches, readCacheHeader, TeacherCache, type CacheHeader, type CacheLogpDType } from './teacher-cache.js';
import { checkOutDir, resolveCheckpoint, RunSetupError } from './checkpoint.js';
import { asTrainBackend, checkModelFits, finetune, type FinetuneOptions, type FinetuneSummary, type Objective } from './trainer.js';
import { DISTILL_FLAG_OPTIONS, withOptionNames } from './option-names.js';
import { OnPolicy, type OnPolicyOptions } from './on-policy.js';
import { loadModel } from '../formats/load.js';
import { LlamaTrainModel } from '../model/llama-train.js';
import type { TrainBackend } from '../backend/backend.js';

export interface DistillOptions extends Omit<FinetuneOptions, 'model' | 'objective'> {
  readonly teacher: string; // HF dir
  readonly student: string; // HF dir (its tokenizer must be the teacher's)
  readonly kdRatio?: number; // weight of the distillation part (default 0.5)
  readonly temperature?: number; // distillation temperature (default 2)
  readonly topK?: number; // cached teacher tokens per target (default 64)
  readonly loss?: KdLossKind; // default forward-kl
  readonly beta?: number; // jsd only (default 0.5)
  readonly teacherCache?: string; // cache file (default OUT.teacher-cache); reused when it matches
  readonly cacheDtype?: CacheLogpDType; // log-probabilities in the cache (default f16)
  /** On-policy (GKD): probability λ per micro-batch that the student samples the continuations and the teacher, held in
   *  memory, scores them (default 0: the cached teacher only, as before). λ = 1 needs no teacher cache. */
  readonly onPolicy?: number;
  readonly sampleTemperature?: number; // the student's sampling temperature on-policy (default 1; 0 = greedy)
  readonly maxNewTokens?: number; // on-policy continuation length (default: each sample's own completion length)
  readonly onSample?: OnPolicyOptions['onSample']; // every on-policy sample the student wrote (inspection, tests)
}

export interface DistillSummary extends FinetuneSummary {
  /** The teacher cache (with λ = 1 none is made: file null, zeros). */
  readonly teacherCache: { readonly file: string | null; readonly built: boolean; readonly rows: number; readonly bytes: number; readonly bytesPerToken: number; readonly seconds: number };
  /** On-policy batches of this run (λ > 0 only): micro-batches the student sampled, tokens it wrote, seconds spent sampling and scoring. */
  readonly onPolicy?: { readonly lambda: number; readonly batches: number; readonly generatedTokens: number; readonly seconds: number };
}

/** The files that define a tokenizer: a student must read and write the teacher's token ids. */
const TOKENIZER_FILES = ['tokenizer.json'];

export async function checkSameTokenizer(teacher: string, student: string): Promise<void> {
  for (const [who, dir] of [['teacher', teacher], ['student', student]] as const) {
    if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) throw new Error(`${who} ${dir}: distillation needs a Hugging Face model directory`);
  }
  const [ct, cs] = [readHfConfig(teacher).config, readHfConfig(student).config];
  if (ct.vocabSize !== cs.vocabSize) {
    throw new Error(`teacher and student must share the tokenizer: vocab size ${ct.vocabSize} (${teacher}) vs ${cs.vocabSize} (${student})`);
  }
  for (const f of TOKENIZER_FILES) {
    const [a, b] = [path.join(teacher, f), path.join(student, f)];
    if (!fs.existsSync(a) || !fs.existsSync(b)) throw new Error(`teacher and student must share the tokenizer: ${fs.existsSync(a) ? b : a} is missing`);
    if (!fs.readFileSync(a).equals(fs.readFileSync(b))) throw new Error(`teacher and student must share the tokenizer: ${a} and ${b} differ (copy the teacher's into the student)`);
  }
}

export async function distill(o: DistillOptions): Promise<DistillSummary> {
  try {
    return await distillRun(o);
  } catch (e) {
    throw withOptionNames(e, 'distill', DISTILL_FLAG_OPTIONS);
  }
}

async function distillRun(o: DistillOptions): Promise<DistillSummary> {
  const log = o.log ?? (o.progress ? (s: string) => process.stderr.write(s + '\n') : () => {});
  const cfg: KdLossConfig = { kind: o.loss ?? 'forward-kl', beta: o.beta ?? 0.5, temperature: o.temperature ?? 2 };
  checkKdConfig(cfg);
  if (o.beta !== undefined && cfg.kind !== 'jsd') throw new Error(`beta applies to the jsd loss, not ${cfg.kind}`);
  const kdRatio = o.kdRatio ?? 0.5;
  if (!(kdRatio >= 0 && kdRatio <= 1)) throw new RangeError(`kd ratio must be in [0, 1], got ${kdRatio}`);
  const topK = o.topK ?? 64;
  // a finished --out, or a --resume with nothing to resume, is refused before the teacher pass, not after it
  checkOutDir(o.out, o);
  if (o.resume !== undefined) resolveCheckpoint(o.resume);
  await checkSameTokenizer(o.teacher, o.student);
  const sc = readHfConfig(o.student).config;
  // a setup error (the CLI's usage error, exit 2): the bound is the student's vocab, known only once its config is read
  if (!(Number.isInteger(topK) && topK >= 1 && topK <= sc.vocabSize)) throw new RunSetupError(`--top-k expects an integer in [1, ${sc.vocabSize}] (the vocab size), got ${topK}`);

  // the training samples exactly as the trainer will make them (same tokenizer, template, truncation)
  const tok = await loadTokenizer(o.student);
  if (!tok) throw new Error(`${o.student}: no tokenizer (tokenizer.json), which training data needs`);
  const template = await loadChatTemplate(o.student);
  const maxSeqLen = o.maxSeqLen ?? Math.min(2048, sc.maxPositionEmbeddings);
  checkModelFits(o.student, sc, maxSeqLen, o); // finetune() checks it again, after the teacher pass
  const samples = loadSamples(o.data, tok, template, { maxSeqLen, trainOnPrompt: o.trainOnPrompt }).samples;

  const lambda = o.onPolicy ?? 0;
  if (!(lambda >= 0 && lambda <= 1)) throw new RangeError(`on-policy λ must be in [0, 1], got ${lambda}`);
  if (lambda === 0 && (o.sampleTemperature !== undefined || o.maxNewTokens !== undefined)) throw new Error('sample temperature and max new tokens apply to on-policy distillation (λ > 0)');
  const backend = o.backendImpl ?? asTrainBackend(selectBackend(o.backend, o.threads));
  if (lambda === 1) {
    if (o.teacherCache !== undefined || o.cacheDtype !== undefined) throw new Error('with on-policy λ = 1 every batch is scored by the teacher in memory: a teacher cache is not used (drop it, or take λ < 1)');
    return distillOnPolicy(o, cfg, kdRatio, topK, maxSeqLen, backend, null, log);
  }

  const file = o.teacherCache ?? `${o.out.replace(/[/\\]+$/, '')}.teacher-cache`;
  // inside --out the cache would make it a non-empty folder that the trainer refuses, after the whole teacher pass
  const rel = path.relative(path.resolve(o.out), path.resolve(file));
  if (rel === '' || !(rel.startsWith('..') || path.isAbsolute(rel))) {
    throw new RunSetupError(`--teacher-cache ${file} is ${rel === '' ? '--out itself' : `inside --out ${o.out}`}: the trainer writes only its own files there; give a path outside it (default OUT.teacher-cache)`);
  }
  let header: CacheHeader | null = fs.existsSync(file) ? readCacheHeader(file) : null;
  if (header && (header.topK !== topK || header.temperature !== cfg.temperature || header.vocabSize !== sc.vocabSize)) {
    throw new Error(`${file}: the cache holds top-${header.topK} at temperature ${header.temperature} (vocab ${header.vocabSize}), ` +
      `this run asks top-${topK} at ${cfg.temperature} (vocab ${sc.vocabSize}); delete it or give another --teacher-cache`);
  }
  if (header) {
    if (o.cacheDtype !== undefined && o.cacheDtype !== header.logpDtype) {
      throw new Error(`${file}: the cache holds ${header.logpDtype} log-probabilities, this run asks ${o.cacheDtype}; delete it or give another --teacher-cache`);
    }
    checkCacheMatches(file, header, o.teacher, samples, o.data); // another teacher or changed data: refused before training
  }
  const built = header === null;
  if (!header) {
    log(`teacher pass: ${o.teacher} over ${samples.length} samples -> ${file}`);
    fs.mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
    header = await buildTeacherCache({ teacher: o.teacher, samples, data: o.data, out: file, topK, temperature: cfg.temperature, logpDtype: o.cacheDtype, backend, log });
  }
  const bpt = bytesPerToken(header.topK, header.logpDtype);
  log(`teacher cache ${file}: ${header.rows} target tokens, ${bpt} bytes/token, ${(header.offsets.end / 2 ** 20).toFixed(1)} MiB` +
    `${built ? `, ${header.seconds.toFixed(1)} s` : ' (reused)'}`);

  const cache = new TeacherCache(file);
  const kd = new CachedKdLoss(cache, kdRatio, cfg);
  const cacheInfo = { file, built, rows: header.rows, bytes: header.offsets.end, bytesPerToken: bpt, seconds: header.seconds };
  if (lambda > 0) return distillOnPolicy(o, cfg, kdRatio, topK, maxSeqLen, backend, { kd, info: cacheInfo }, log);
  const objective: Objective = {
    options: { distill: 'cached-top-k', loss: cfg.kind, beta: cfg.kind === 'jsd' ? cfg.beta : null, temperature: cfg.temperature, topK, kdRatio },
    ceWeight: 1 - kdRatio, weight: kdRatio,
    forBatch: (s, b) => kd.setBatch(s, b),
  };
  const s = await finetune({ ...trainerOptions(o), maxSeqLen, objective, backendImpl: backend });
  const summary: DistillSummary = { ...s, teacherCache: cacheInfo };
  fs.writeFileSync(path.join(o.out, 'summary.json'), JSON.stringify(summary, null, 1) + '\n');
  return summary;
}

/** finetune's options out of distill's. */
function trainerOptions(o: DistillOptions): FinetuneOptions {
  const { teacher: _t, student, kdRatio: _r, temperature: _T, topK: _k, loss: _l, beta: _b, teacherCache: _c, cacheDtype: _d,
    onPolicy: _p, sampleTemperature: _s, maxNewTokens: _m, onSample: _o, ...rest } = o;
  return { ...rest, model: student };
}

/** λ > 0: the teacher in memory scores the student's samples on on-policy batches; the others use the cache (λ < 1). */
async function distillOnPolicy(
  o: DistillOptions, cfg: KdLossConfig, kdRatio: number, topK: number, maxSeqLen: number, backend: TrainBackend,
  cached: { kd: CachedKdLoss; info: DistillSummary['teacherCache'] } | null, log: (s: string) => void,
): Promise<DistillSummary> {
  const lambda = o.onPolicy!;
  const sampleTemperature = o.sampleTemperature ?? 1;
  log(`on-policy: λ ${lambda}, the student samples at temperature ${sampleTemperature}; teacher ${o.teacher} in memory`);
  const loaded = await loadModel(o.teacher);
  const teacher = LlamaTrainModel.fromTensors(loaded.config, loaded.tensors, backend, { adapter: null, full: false, checkpointActivations: false }, loaded.ropeFreqFactors);
  if (maxSeqLen > loaded.config.maxPositionEmbeddings) throw new RangeError(`max seq len ${maxSeqLen} exceeds the teacher's context ${loaded.config.maxPositionEmbeddings}`);
  const on = new OnPolicy(teacher, { lambda, sampleTemperature, maxNewTokens: o.maxNewTokens ?? null, maxSeqLen, topK, kdRatio, loss: cfg, onSample: o.onSample });
  const objective: Objective = {
    options: {
      distill: lambda === 1 ? 'on-policy' : 'cached-top-k+on-policy', loss: cfg.kind, beta: cfg.kind === 'jsd' ? cfg.beta : null, temperature: cfg.temperature, topK, kdRatio,
      onPolicy: lambda, sampleTemperature, maxNewTokens: o.maxNewTokens ?? null,
    },
    ceWeight: 1 - kdRatio, weight: kdRatio,
    bind: (m) => on.bind(m),
    prepare: (s, b, key) => on.prepare(s, b, key),
    forBatch: (s, b) => {
      const l = on.lossFor(b);
      if (l) return l;
      if (!cached) throw new Error('on-policy distillation with λ = 1 made an off-policy batch');
      return cached.kd.setBatch(s, b);
    },
  };
  try {
    const s = await finetune({ ...trainerOptions(o), maxSeqLen, objective, backendImpl: backend });
    const summary: DistillSummary = {
      ...s, teacherCache: cached?.info ?? { file: null, built: false, rows: 0, bytes: 0, bytesPerToken: 0, seconds: 0 },
      onPolicy: { lambda, batches: on.batches, generatedTokens: on.generatedTokens, seconds: on.sampleSeconds },
    };
    fs.writeFileSync(path.join(o.out, 'summary.json'), JSON.stringify(summary, null, 1) + '\n');
    return summary;
  } finally {
    loaded.dispose();
  }
}
