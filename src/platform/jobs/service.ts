// Fine-tuning jobs (OpenAI /v1/fine_tuning/jobs) on floe's trainer: one job at a time in a niced child process,
// state in the platform store, output under DATA/jobs/<id>/; a restart resumes a running job from its last checkpoint.
//
// validating_files → queued → running → succeeded | failed | cancelled; queued / running ⇄ paused (pause, resume)

import { fork, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { setPriority } from 'node:os';
import { dirname, extname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { defaultLoraAlpha, LORA_TARGETS, parseLoraTargets, type LoraTarget } from '../../model/lora.js';
import { DEFAULT_MAX_LORA_RANK } from '../../engine/adapters.js';
import { listCheckpoints, STATE_FILE } from '../../train/checkpoint.js';
import type { LoadDType } from '../../formats/load.js';
import { createFile, keepCopy, parseFineTuneFile } from '../files.js';
import { metadataProblem } from '../metadata.js';
import type { JobCheckpointRow, JobEventRow, JobRow, JobStatus, Store } from '../store.js';
import type { ChildOptions, FromChild, ToChild } from './protocol.js';

export interface JobsOptions {
  readonly baseModel: string; // the served base model's name: the only `model` a job may name
  readonly modelPath: string; // its weights (HF dir or .gguf), which the trainer reads
  readonly threads: number; // the trainer's thread budget (--jobs-threads)
  /** The server's --dtype: jobs train on the base converted as it is served, so the adapter fits what it runs on. */
  readonly dtype?: LoadDType;
  readonly maxLoraRank?: number; // the server's --max-lora-rank: a job of a higher rank could not be served (default 64)
  readonly nice?: number; // the trainer's niceness (default 10)
  /** Serve a finished adapter under `name` (the engine's runtime load); a rejection fails the job. */
  readonly register?: (name: string, dir: string) => Promise<void>;
  readonly log?: (line: string) => void;
}

/** A request the API refuses, with what / where / why. */
export class JobApiError extends Error {
  constructor(readonly status: 400 | 404 | 409, message: string, readonly param: string | null = null, readonly code: string | null = null) {
    super(message);
  }
}

/** floe's trainer options, in the job's `floe` field (extra_body in the Python client). */
export interface FloeJobOptions {
  readonly lora_rank: number;
  readonly lora_alpha: number;
  readonly lora_targets: readonly LoraTarget[];
  readonly lora_dropout: number;
  readonly max_steps: number | null; // instead of n_epochs (then reported as the epochs these steps make)
  readonly save_steps: number; // checkpoint every N steps (and at the end)
  readonly eval_steps: number | null; // validation loss every N steps (with a validation file; default save_steps)
  readonly max_seq_len: number | null;
  readonly warmup_steps: number;
}

export interface Hyperparameters { readonly n_epochs: number; readonly batch_size: number; readonly learning_rate_multiplier: number }
/** As asked: a value or 'auto' (resolved from the training file once it is validated). */
export type RequestedHyperparameters = { readonly [K in keyof Hyperparameters]: number | 'auto' };

export const BASE_LR = 2e-4; // floe's LoRA learning rate, times learning_rate_multiplier
const HYPERPARAMETERS = ['n_epochs', 'batch_size', 'learning_rate_multiplier'] as const;

/**
 * floe's 'auto' rule, after OpenAI's documented one. Epochs: 3, raised so that a small file is seen about 100 times
 * in all (at most 25 epochs) and lowered so that a large one is seen at most about 25,000 times (at least 1 epoch).
 * Batch size: about 0.2% of the examples, between 1 and 256. Learning-rate multiplier: larger for larger batches, in
 * OpenAI's 1 : 2 : 4 steps: 1 up to 8 examples per batch, 2 up to 64, 4 above (× floe's LoRA rate 2e-4).
 */
export function autoHyperparameters(examples: number, asked: RequestedHyperparameters = { n_epochs: 'auto', batch_size: 'auto', learning_rate_multiplier: 'auto' }): Hyperparameters {
  if (!(Number.isInteger(examples) && examples > 0)) throw new Error(`auto hyperparameters need a positive number of training examples, got ${examples}`);
  const n_epochs = asked.n_epochs !== 'auto' ? asked.n_epochs
    : examples * 3 < 100 ? Math.min(25, Math.ceil(100 / examples))
    : examples * 3 > 25_000 ? Math.max(1, Math.floor(25_000 / examples)) : 3;
  const batch_size = asked.batch_size !== 'auto' ? asked.batch_size : Math.min(256, Math.max(1, Math.round(examples * 0.002)));
  const learning_rate_multiplier = asked.learning_rate_multiplier !== 'auto' ? asked.learning_rate_multiplier
    : batch_size <= 8 ? 1 : batch_size <= 64 ? 2 : 4;
  return { n_epochs, batch_size, learning_rate_multiplier };
}
/**
 * What `floe.max_steps` trains, in the epochs `hyperparameters.n_epochs` reports: each epoch is ceil(examples /
 * batch_size) steps (the trainer's last batch of an epoch may be short), so max_steps is max_steps / that, to 3
 * significant digits (8 steps over 24 examples in batches of 4: 1.33).
 */
export function epochsOfSteps(maxSteps: number, examples: number, batchSize: number): number {
  return Number((maxSteps / Math.ceil(examples / batchSize)).toPrecision(3));
}
/** What POST /v1/fine_tuning/jobs takes (OpenAI's parameters, and floe's trainer options in `floe`). */
const JOB_KEYS = ['model', 'training_file', 'validation_file', 'hyperparameters', 'method', 'suffix', 'seed', 'metadata', 'integrations', 'floe'] as const;
const FLOE_KEYS = ['lora_rank', 'lora_alpha', 'lora_targets', 'lora_dropout', 'max_steps', 'save_steps', 'eval_steps', 'max_seq_len', 'warmup_steps'] as const;
const TERMINAL: readonly JobStatus[] = ['succeeded', 'failed', 'cancelled'];

const now = (): number => Math.floor(Date.now() / 1000);
const hex = (): string => randomUUID().replaceAll('-', '');

/** OpenAI's name for a fine-tuned model: ft:<base>:<org>:<suffix>:<job id>. */
export function fineTunedName(base: string, suffix: string | null, jobId: string): string {
  return `${jobModelPrefix(base)}${suffix ?? ''}:${jobId}`;
}
/** How the names of `base`'s fine-tuned models and their checkpoints begin: the jobs' namespace, no other adapter's. */
export function jobModelPrefix(base: string): string {
  return `ft:${base}:floe:`;
}

interface Current {
  readonly id: string;
  readonly proc: ChildProcess;
  readonly exited: Promise<void>;
  cancel: boolean;
  summary: Extract<FromChild, { type: 'done' }>['summary'] | null;
  error: string | null;
  stderr: string;
}

export class JobService {
  private current: Current | null = null;
  private finishing: string | null = null; // the job whose adapter is being registered
  private readonly unpaused = new Set<string>(); // jobs resumed after a pause, not yet started again
  private stopping = false;
  private pumping: Promise<void> = Promise.resolve();
  private readonly log: (line: string) => void;

  constructor(readonly store: Store, private readonly opts: JobsOptions) {
    this.log = opts.log ?? ((l) => process.stderr.write(`floe jobs: ${l}\n`));
  }

  jobDir(id: string): string { return join(this.store.dataDir, 'jobs', id); }
  runDir(id: string): string { return join(this.jobDir(id), 'run'); }
  adapterDir(id: string): string { return join(this.jobDir(id), 'adapter'); }
  /** The job's own link (or copy) of its training / validation file, made when the file is validated. */
  inputPath(id: string, param: 'training_file' | 'validation_file'): string { return join(this.jobDir(id), `${param}.jsonl`); }

  /** Pick up what a previous process left: stale trainers are killed, running jobs resume, files are re-validated. */
  async start(): Promise<void> {
    for (const j of this.store.jobsWith(['running'])) if (j.child_pid !== null) await killStale(j.child_pid);
    for (const j of this.store.jobsWith(['validating_files'])) this.validate(j.id);
    this.pump();
  }

  /** Serve the adapter of every succeeded job (at start, once the engine is up). */
  async registerAll(register = this.opts.register): Promise<void> {
    for (const j of this.store.jobsWith(['succeeded'])) {
      if (!j.fine_tuned_model || j.model !== this.opts.baseModel) continue; // another base's adapter (the data dir outlived a --model change)
      rmSync(this.deletedDir(j.id), { recursive: true, force: true }); // a DELETE that stopped before its cleanup
      if (this.modelDeleted(j)) continue;
      try {
        await register?.(j.fine_tuned_model, this.adapterDir(j.id));
      } catch (e) {
        this.log(`cannot serve ${j.fine_tuned_model} from ${this.adapterDir(j.id)}: ${(e as Error).message}`);
      }
    }
  }

  /** The succeeded job of this base whose fine-tuned model is `name` (deleted or not), else undefined. */
  jobOfModel(name: string): JobRow | undefined {
    const m = /:(ftjob-[0-9a-f]+)$/.exec(name);
    const j = m ? this.store.getJob(m[1]!) : undefined;
    return j && j.status === 'succeeded' && j.model === this.opts.baseModel && j.fine_tuned_model === name ? j : undefined;
  }

  /**
   * Why the models of job `j` (`name` one of them) cannot be served by this server, or null: a LoRA rank above its
   * --max-lora-rank (a job created under a higher limit, before a restart). The words of the routes' 400.
   */
  rankProblem(j: JobRow, name: string): string | null {
    const rank = (JSON.parse(j.options) as { lora_rank?: unknown }).lora_rank;
    const max = this.opts.maxLoraRank ?? DEFAULT_MAX_LORA_RANK;
    if (typeof rank !== 'number' || rank <= max) return null;
    return `the model '${name}' (fine-tuning job ${j.id}) exists but is not served: its LoRA rank ${rank} is above this ` +
      `server's --max-lora-rank ${max}; restart floe serve with --max-lora-rank ${rank} or more to serve it`;
  }

  /** A succeeded job's model was deleted (DELETE /v1/models/{model}): its adapter directory is gone. */
  modelDeleted(j: JobRow): boolean {
    return !existsSync(this.adapterDir(j.id));
  }

  /**
   * Delete a succeeded job's fine-tuned model: its adapter leaves the data dir, so no later start serves it
   * (`unload` stops serving it now). The job, its events, checkpoints and result file stay, as OpenAI keeps them.
   */
  async deleteModel(j: JobRow, unload: (name: string) => Promise<void>): Promise<void> {
    renameSync(this.adapterDir(j.id), this.deletedDir(j.id)); // the one step that deletes it, whatever stops after
    this.event(j.id, `Fine-tuned model deleted: ${j.fine_tuned_model}`);
    try {
      await unload(j.fine_tuned_model!);
    } finally {
      rmSync(this.deletedDir(j.id), { recursive: true, force: true });
    }
  }

  private deletedDir(id: string): string { return join(this.jobDir(id), 'adapter.deleted'); }

  create(body: Record<string, unknown>): JobRow {
    const file = (param: string, v: unknown, required: boolean): string | null => {
      if (v === undefined || v === null) {
        if (required) throw new JobApiError(400, `${param} is required: the id of an uploaded file with purpose 'fine-tune'`, param, 'invalid_value');
        return null;
      }
      if (typeof v !== 'string') throw new JobApiError(400, `${param} must be a file id string, got ${JSON.stringify(v)}`, param, 'invalid_value');
      const f = this.store.getFile(v);
      if (!f) throw new JobApiError(404, `no file with id '${v}'`, param, 'file_not_found');
      if (f.purpose !== 'fine-tune') throw new JobApiError(400, `file '${v}' has purpose '${f.purpose}'; ${param} needs purpose 'fine-tune'`, param, 'invalid_value');
      return v;
    };
    // a misspelt parameter (validaton_file) would otherwise train without what it asked for, as OpenAI refuses it
    for (const k of Object.keys(body)) {
      if (!(JOB_KEYS as readonly string[]).includes(k)) throw new JobApiError(400, `unknown parameter '${k.slice(0, 100)}'; a fine-tuning job takes ${JOB_KEYS.join(', ')}`, k.slice(0, 100), 'unknown_parameter');
    }
    const integrations = body.integrations ?? [];
    if (!Array.isArray(integrations) || integrations.length > 0) {
      throw new JobApiError(400, `floe sends a job's metrics to no integration (such as wandb): give integrations as [] or leave it out; the job's events and result file hold its metrics, got ${JSON.stringify(integrations).slice(0, 200)}`, 'integrations', 'invalid_value');
    }
    if (typeof body.model !== 'string') throw new JobApiError(400, `model must be a string, got ${JSON.stringify(body.model)}`, 'model', 'invalid_value');
    if (body.model !== this.opts.baseModel) {
      throw new JobApiError(404, `the model '${body.model.slice(0, 200)}' does not exist or cannot be fine-tuned here; this server fine-tunes '${this.opts.baseModel}'`, 'model', 'model_not_found');
    }
    const training = file('training_file', body.training_file, true)!;
    const validation = file('validation_file', body.validation_file, false);
    const hp = hyperparameters(body);
    const floe = floeOptions(body.floe, this.opts.maxLoraRank ?? DEFAULT_MAX_LORA_RANK);
    if (floe.eval_steps !== null && validation === null) {
      throw new JobApiError(400, `floe.eval_steps (${floe.eval_steps}) sets how often the validation loss is computed, and this job has no validation_file`, 'floe.eval_steps', 'invalid_value');
    }
    if (floe.max_steps !== null && hp.n_epochs !== 'auto') {
      throw new JobApiError(400, `give hyperparameters.n_epochs (${hp.n_epochs}) or floe.max_steps (${floe.max_steps}), not both: the run is either a number of epochs or a number of steps`, 'hyperparameters.n_epochs', 'invalid_value');
    }
    const suffix = body.suffix ?? null;
    if (suffix !== null && (typeof suffix !== 'string' || !/^[A-Za-z0-9._-]{1,64}$/.test(suffix))) {
      throw new JobApiError(400, `suffix must be 1 to 64 characters of letters, digits, '.', '_' or '-', got ${JSON.stringify(suffix)}`, 'suffix', 'invalid_value');
    }
    const seed = body.seed ?? Math.floor(Math.random() * 2 ** 31);
    if (!(Number.isInteger(seed) && (seed as number) >= 0 && (seed as number) < 2 ** 31)) throw new JobApiError(400, `seed must be an integer in [0, 2^31), got ${JSON.stringify(seed)}`, 'seed', 'invalid_value');
    const md = body.metadata ?? null;
    const mdProblem = metadataProblem(md);
    if (mdProblem) throw new JobApiError(400, mdProblem.message, mdProblem.param, 'invalid_value');
    if (this.stopping) throw new JobApiError(409, 'the server is shutting down; create the job again after it restarts');
    const row: Omit<JobRow, 'seq'> = {
      id: `ftjob-${hex()}`, model: body.model, training_file: training, validation_file: validation, hyperparameters: JSON.stringify(hp),
      options: JSON.stringify(floe), suffix: suffix as string | null, seed: seed as number, metadata: md === null ? null : JSON.stringify(md),
      status: 'validating_files', error: null, fine_tuned_model: null, result_files: '[]', trained_tokens: null, created_at: now(),
      started_at: null, finished_at: null, attempts: 0, child_pid: null,
    };
    this.store.tx(() => {
      this.store.insertJob(row);
      this.event(row.id, `Validating training file: ${training}${validation ? ` and validation file: ${validation}` : ''}`);
    });
    this.validate(row.id);
    return this.get(row.id);
  }

  get(id: string): JobRow {
    const j = this.store.getJob(id);
    if (!j) throw new JobApiError(404, `no fine-tuning job with id '${id.slice(0, 200)}'`, 'fine_tuning_job_id', 'not_found');
    return j;
  }

  /** Cancel a job: a running trainer is killed (its checkpoints are atomic), the job ends 'cancelled'. */
  async cancel(id: string): Promise<JobRow> {
    const j = this.get(id);
    if (TERMINAL.includes(j.status)) throw new JobApiError(409, `job '${id}' is ${j.status}; only a validating, queued, running or paused job can be cancelled`, null, 'job_not_cancellable');
    if (this.finishing === id) throw new JobApiError(409, `job '${id}' has finished training and is registering its model; it can no longer be cancelled`, null, 'job_not_cancellable');
    this.store.tx(() => {
      this.store.updateJob(id, { status: 'cancelled', finished_at: now(), child_pid: null });
      this.event(id, 'Job cancelled');
    });
    const c = this.current;
    if (c?.id === id) {
      c.cancel = true;
      c.proc.kill('SIGKILL');
      await c.exited;
    }
    this.dropInputs(id);
    return this.get(id);
  }

  /**
   * OpenAI's pause: a queued or running job stops (a running trainer is killed; its checkpoints are atomic) and waits,
   * 'paused', until resume() queues it again; it then continues from its last checkpoint, as after a restart.
   */
  async pause(id: string): Promise<JobRow> {
    const j = this.get(id);
    if (j.status !== 'queued' && j.status !== 'running') {
      throw new JobApiError(409, `job '${id}' is ${j.status}; only a queued or running job can be paused${j.status === 'validating_files' ? ' (it is queued once its files are validated)' : ''}`, null, 'job_not_pausable');
    }
    if (this.finishing === id) throw new JobApiError(409, `job '${id}' has finished training and is registering its model; it can no longer be paused`, null, 'job_not_pausable');
    this.store.tx(() => {
      this.store.updateJob(id, { status: 'paused', child_pid: null });
      this.event(id, 'Job paused');
    });
    const c = this.current;
    if (c?.id === id) {
      c.cancel = true; // its exit records nothing: the job is paused, not failed
      c.proc.kill('SIGKILL');
      await c.exited;
    }
    return this.get(id);
  }

  /** OpenAI's resume: a paused job is queued again, and continues from its last checkpoint when its turn comes. */
  resume(id: string): JobRow {
    const j = this.get(id);
    if (j.status !== 'paused') throw new JobApiError(409, `job '${id}' is ${j.status}; only a paused job can be resumed`, null, 'job_not_resumable');
    this.store.tx(() => {
      this.store.updateJob(id, { status: 'queued' });
      this.event(id, 'Job resumed, moving job to queued state');
    });
    this.unpaused.add(id);
    this.pump();
    return this.get(id);
  }

  /** Stop the trainer (the job stays 'running': the next process resumes it from its last checkpoint). */
  async close(): Promise<void> {
    this.stopping = true;
    const c = this.current;
    if (c) {
      c.proc.kill('SIGKILL');
      await c.exited;
    }
    await this.pumping;
  }

  /** Resolves once no trainer runs and nothing is queued or validating (tests and the bench). */
  async idle(): Promise<void> {
    const waiting = () => this.store.jobsWith(['validating_files', 'queued']).some((j) => j.model === this.opts.baseModel);
    while (this.current || this.finishing || waiting()) await new Promise((r) => setTimeout(r, 50));
  }

  /**
   * The adapter directory of a checkpoint named as OpenAI names checkpoint models (`ft:<base>:floe:<suffix>:<job>:ckpt-step-N`);
   * null when `name` is no checkpoint name. Only checkpoints still on disk can be served (the trainer keeps its last 3).
   */
  checkpointDir(name: string): string | null {
    const m = /^ft:.*:(ftjob-[0-9a-f]+):ckpt-step-(\d+)$/.exec(name);
    if (!m) return null;
    const j = this.store.getJob(m[1]!);
    const step = Number(m[2]);
    if (!j || j.model !== this.opts.baseModel || `${fineTunedName(j.model, j.suffix, j.id)}:ckpt-step-${step}` !== name) {
      throw new JobApiError(404, `the model '${name.slice(0, 200)}' does not exist: no fine-tuning job of '${this.opts.baseModel}' has that checkpoint name`, 'model', 'model_not_found');
    }
    const onDisk = listCheckpoints(this.runDir(j.id));
    const c = onDisk.find((x) => x.step === step);
    if (c) return c.dir;
    const have = onDisk.map((x) => x.step).join(', ') || 'none';
    const saved = this.store.jobCheckpoints(j.id, null, 10_000).some((x) => x.step === step);
    throw new JobApiError(404, saved
      ? `the checkpoint at step ${step} of ${j.id} was removed (the trainer keeps its last 3 checkpoints; on disk: steps ${have})`
      : `${j.id} has no checkpoint at step ${step} (on disk: steps ${have})`, 'model', 'model_not_found');
  }

  /** The OpenAI fine_tuning.job object. */
  object(j: JobRow): Record<string, unknown> {
    const hp = JSON.parse(j.hyperparameters) as RequestedHyperparameters; // numbers once the files are validated
    return {
      object: 'fine_tuning.job', id: j.id, model: j.model, created_at: j.created_at, finished_at: j.finished_at,
      fine_tuned_model: j.fine_tuned_model, organization_id: 'floe', result_files: JSON.parse(j.result_files) as string[],
      status: j.status, validation_file: j.validation_file, training_file: j.training_file, hyperparameters: hp,
      trained_tokens: j.trained_tokens, error: j.error === null ? null : JSON.parse(j.error), user_provided_suffix: j.suffix,
      seed: j.seed, estimated_finish: null, integrations: [], metadata: j.metadata === null ? null : JSON.parse(j.metadata),
      method: { type: 'supervised', supervised: { hyperparameters: hp } }, floe: JSON.parse(j.options),
    };
  }

  eventObject(e: JobEventRow): Record<string, unknown> {
    return { object: 'fine_tuning.job.event', id: e.id, created_at: e.created_at, level: e.level, message: e.message, type: e.type, data: e.data === null ? null : JSON.parse(e.data) };
  }

  checkpointObject(j: JobRow, c: JobCheckpointRow): Record<string, unknown> {
    const s = this.store.jobStep(j.id, c.step);
    return {
      object: 'fine_tuning.job.checkpoint', id: c.id, created_at: c.created_at,
      fine_tuned_model_checkpoint: `${fineTunedName(j.model, j.suffix, j.id)}:ckpt-step-${c.step}`, step_number: c.step,
      metrics: { step: c.step, train_loss: s?.train_loss ?? null, valid_loss: s?.valid_loss ?? null, full_valid_loss: s?.valid_loss ?? null },
      fine_tuning_job_id: j.id,
    };
  }

  private event(jobId: string, message: string, o: { level?: JobEventRow['level']; type?: JobEventRow['type']; data?: unknown } = {}): void {
    this.store.addJobEvent({
      id: `ftevent-${hex()}`, job_id: jobId, created_at: now(), level: o.level ?? 'info', message, type: o.type ?? 'message',
      data: o.data === undefined ? null : JSON.stringify(o.data),
    });
  }

  private fail(id: string, code: string, message: string, param: string | null = null): void {
    this.store.tx(() => {
      this.store.updateJob(id, { status: 'failed', finished_at: now(), child_pid: null, error: JSON.stringify({ code, message, param }) });
      this.event(id, `Job failed: ${message}`, { level: 'error' });
    });
    this.dropInputs(id);
  }

  /** A job that ended keeps no copy of its files (a deleted upload's bytes leave the disk with its job's end). */
  private dropInputs(id: string): void {
    for (const param of ['training_file', 'validation_file'] as const) rmSync(this.inputPath(id, param), { force: true });
  }

  /** Check the files again (they may have been deleted since the upload), then queue the job. */
  private validate(id: string): void {
    setImmediate(() => {
      const j = this.store.getJob(id);
      if (!j || j.status !== 'validating_files') return;
      let examples = 0;
      for (const [param, fid] of [['training_file', j.training_file], ['validation_file', j.validation_file]] as const) {
        if (fid === null) continue;
        try {
          if (!this.store.getFile(fid)) throw new Error(`the file ${fid} was deleted`);
          // the job trains on what it validated: a later DELETE /v1/files (OpenAI allows it) or a resume after a
          // restart reads the job's own link to these bytes, never a file that is gone
          const own = this.inputPath(id, param);
          keepCopy(this.store.filePath(fid), own); // validation redone after a restart replaces an earlier link
          const n = parseFineTuneFile(own); // line by line: a training file past the longest string (~512 MiB) reads too
          if (param === 'training_file') examples = n;
        } catch (e) {
          const gone = (e as NodeJS.ErrnoException).code === 'ENOENT' ? new Error(`the file ${fid} was deleted`) : e as Error;
          return this.fail(id, param === 'training_file' ? 'invalid_training_file' : 'invalid_validation_file', `${fid}: ${gone.message}`, param);
        }
      }
      if (examples === 0) return this.fail(id, 'invalid_training_file', `${j.training_file}: the training file has no examples`, 'training_file');
      const asked = JSON.parse(j.hyperparameters) as RequestedHyperparameters;
      const auto = autoHyperparameters(examples, asked);
      // with max_steps the run is that many steps, whatever 'auto' would have chosen: report the epochs they make
      const maxSteps = (JSON.parse(j.options) as FloeJobOptions).max_steps;
      const hp = maxSteps === null ? auto : { ...auto, n_epochs: epochsOfSteps(maxSteps, examples, auto.batch_size) };
      this.store.tx(() => {
        this.store.updateJob(id, { status: 'queued', hyperparameters: JSON.stringify(hp) });
        if (HYPERPARAMETERS.some((k) => asked[k] === 'auto')) {
          const steps = maxSteps === null ? '' : ` (floe.max_steps ${maxSteps} at ${Math.ceil(examples / hp.batch_size)} steps an epoch)`;
          this.event(id, `Hyperparameters for ${examples} training examples: n_epochs=${hp.n_epochs}${steps}, batch_size=${hp.batch_size}, learning_rate_multiplier=${hp.learning_rate_multiplier}`, { data: { examples, hyperparameters: hp } });
        }
        this.event(id, 'Files validated, moving job to queued state');
      });
      this.pump();
    });
  }

  /** Start the next job when no trainer runs: a job left running by a previous process first, then the oldest queued. */
  private pump(): void {
    this.pumping = this.pumping.then(() => {
      if (this.stopping || this.current || this.finishing) return;
      // jobs of another base model (the data dir outlived a --model change) wait for a server of that model
      const mine = (js: JobRow[]) => js.find((j) => j.model === this.opts.baseModel);
      const next = mine(this.store.jobsWith(['running'])) ?? mine(this.store.jobsWith(['queued']));
      if (!next) return;
      try {
        this.launch(next);
      } catch (e) {
        this.fail(next.id, 'internal_error', `cannot start the trainer: ${(e as Error).message}`);
        this.pump();
      }
    });
  }

  private launch(j: JobRow): void {
    const hp = JSON.parse(j.hyperparameters) as Hyperparameters;
    const f = JSON.parse(j.options) as FloeJobOptions;
    const run = this.runDir(j.id);
    mkdirSync(run, { recursive: true });
    const last = listCheckpoints(run).at(-1);
    // a resumed job keeps the base dtype it started with (a restart under another --dtype would change its computation)
    const dtype = last ? recordedDtype(last.dir) : this.opts.dtype;
    const options: ChildOptions = {
      model: this.opts.modelPath, data: this.input(j, 'training_file')!, out: run,
      eval: this.input(j, 'validation_file'),
      evalSteps: j.validation_file === null ? undefined : f.eval_steps ?? f.save_steps,
      lora: { rank: f.lora_rank, alpha: f.lora_alpha, targets: [...f.lora_targets], dropout: f.lora_dropout },
      ...(f.max_steps === null ? { epochs: hp.n_epochs } : { maxSteps: f.max_steps }),
      lr: BASE_LR * hp.learning_rate_multiplier, batchSize: hp.batch_size, warmupSteps: f.warmup_steps,
      maxSeqLen: f.max_seq_len ?? undefined, saveSteps: f.save_steps, saveTotalLimit: 3, seed: j.seed,
      threads: this.opts.threads, ...(last ? { resume: run } : { overwrite: true }), ...(dtype ? { dtype } : {}),
    };
    const proc = fork(childPath(), [], { stdio: ['ignore', 'ignore', 'pipe', 'ipc'], execArgv: childExecArgv() });
    let resolveExit!: () => void;
    const c: Current = { id: j.id, proc, cancel: false, summary: null, error: null, stderr: '', exited: new Promise((r) => { resolveExit = r; }) };
    this.current = c;
    try { setPriority(proc.pid!, this.opts.nice ?? 10); } catch { /* not permitted here: runs at normal priority */ }
    proc.stderr!.on('data', (d: Buffer) => { c.stderr = (c.stderr + d.toString()).slice(-4000); });
    proc.on('message', (m: FromChild) => this.onMessage(c, m));
    proc.once('error', (e) => { c.error ??= e.message; });
    proc.once('exit', (code, signal) => {
      void this.onExit(c, code, signal).finally(() => {
        if (this.current === c) this.current = null;
        resolveExit();
        this.pump();
      });
    });
    const why = this.unpaused.delete(j.id) ? 'pause' : 'restart';
    this.store.tx(() => {
      this.store.updateJob(j.id, { status: 'running', started_at: j.started_at ?? now(), attempts: j.attempts + 1, child_pid: proc.pid ?? null });
      if (j.attempts === 0) this.event(j.id, 'Fine-tuning job started');
      else if (last) this.event(j.id, `Resuming from the checkpoint at step ${last.step} after a ${why}`, { data: { resumed_from_step: last.step } });
      else this.event(j.id, `Restarting from step 0 after a ${why} (no checkpoint was complete)`, { level: 'warn', data: { resumed_from_step: 0 } });
    });
    proc.send({ type: 'start', options } satisfies ToChild);
  }

  /** What the trainer reads for a job's file: its own link (a job validated before these links: the upload). */
  private input(j: JobRow, param: 'training_file' | 'validation_file'): string | undefined {
    const fid = j[param];
    if (fid === null) return undefined;
    const own = this.inputPath(j.id, param);
    return existsSync(own) ? own : this.store.filePath(fid);
  }

  /** A trainer message with the job's file ids where it names the paths the trainer read (the user knows the ids). */
  private withFileIds(j: JobRow, message: string): string {
    for (const param of ['training_file', 'validation_file'] as const) {
      const fid = j[param];
      if (fid === null) continue;
      message = message.replaceAll(this.inputPath(j.id, param), `${param} ${fid}`).replaceAll(this.store.filePath(fid), `${param} ${fid}`);
    }
    return message;
  }

  private onMessage(c: Current, m: FromChild): void {
    if (c.cancel || this.stopping) return;
    const id = c.id;
    switch (m.type) {
      case 'metrics': {
        const l = m.line as { type?: string; step?: number; loss?: number; total_tokens?: number; lr?: number; eval_loss?: number };
        if (typeof l.step !== 'number') return;
        if (l.type === 'train' && typeof l.loss === 'number') {
          if (this.store.putJobStep(id, l.step, { train_loss: l.loss, total_tokens: l.total_tokens })) {
            this.event(id, `Step ${l.step}: training loss=${l.loss.toFixed(4)}`, { type: 'metrics', data: { step: l.step, train_loss: l.loss, total_tokens: l.total_tokens, learning_rate: l.lr } });
          }
        } else if (l.type === 'eval' && typeof l.eval_loss === 'number') {
          if (this.store.jobStep(id, l.step)?.valid_loss == null) {
            this.store.putJobStep(id, l.step, { valid_loss: l.eval_loss });
            this.event(id, `Step ${l.step}: validation loss=${l.eval_loss.toFixed(4)}`, { type: 'metrics', data: { step: l.step, valid_loss: l.eval_loss } });
          }
        }
        return;
      }
      case 'checkpoint':
        if (this.store.putJobCheckpoint({ id: `ftckpt-${hex()}`, job_id: id, step: m.step, created_at: now() })) this.event(id, `Checkpoint created at step ${m.step}`, { data: { step: m.step } });
        return;
      case 'log':
        this.event(id, m.message);
        return;
      case 'done':
        c.summary = m.summary;
        return;
      case 'error':
        c.error = m.message;
        return;
    }
  }

  private async onExit(c: Current, code: number | null, signal: NodeJS.Signals | null): Promise<void> {
    if (c.cancel || this.stopping) return; // cancelled (already recorded), or left running for the next process
    const j = this.store.getJob(c.id);
    if (!j || j.status !== 'running') return;
    if (code !== 0 || c.summary === null) {
      const why = c.error ?? `the trainer exited with ${signal ? `signal ${signal}` : `code ${code}`}${c.stderr.trim() ? `: ${c.stderr.trim().split('\n').slice(-3).join(' | ')}` : ''}`;
      return this.fail(c.id, 'training_failed', this.withFileIds(j, why));
    }
    this.finishing = c.id;
    try {
      // the trainer's final/ moves into place whole; a crash before the status flips redoes it (resume at the last step)
      const dir = this.adapterDir(c.id);
      rmSync(dir, { recursive: true, force: true });
      renameSync(c.summary.output, dir);
      const csv = ['step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy\n',
        ...this.store.jobSteps(c.id).filter((s) => s.train_loss !== null).map((s) => `${s.step},${s.train_loss},,${s.valid_loss ?? ''},\n`)];
      const result = createFile(this.store, 'fine-tune-results', 'step_metrics.csv', csv, csv.length - 1);
      const name = fineTunedName(j.model, j.suffix, j.id);
      // a job created under a higher --max-lora-rank than this start's (queued, paused or running across the restart)
      // trained all the same: it succeeds, unserved here as a succeeded job's model is at such a start (a 400 naming
      // the rank and the flag), and served by a start with a high enough limit
      const unserved = this.rankProblem(j, name);
      if (unserved) this.log(`cannot serve ${name} from ${dir}: ${unserved}`);
      else {
        try {
          await this.opts.register?.(name, dir);
        } catch (e) {
          return this.fail(c.id, 'model_registration_failed', `the adapter trained, but serving it as ${name} failed: ${(e as Error).message}`);
        }
      }
      this.store.tx(() => {
        if (this.store.getJob(c.id)?.status !== 'running') return;
        this.store.updateJob(c.id, { status: 'succeeded', fine_tuned_model: name, result_files: JSON.stringify([result.id]), trained_tokens: c.summary!.tokens, finished_at: now(), child_pid: null });
        this.event(c.id, `New fine-tuned model created: ${name}`, { data: { fine_tuned_model: name, steps: c.summary!.steps, start_step: c.summary!.startStep } });
        if (unserved) this.event(c.id, unserved.charAt(0).toUpperCase() + unserved.slice(1), { level: 'warn' });
        this.event(c.id, 'The job has successfully completed');
      });
      this.dropInputs(c.id);
    } catch (e) {
      this.fail(c.id, 'internal_error', (e as Error).message);
    } finally {
      this.finishing = null;
    }
  }
}

function hyperparameters(body: Record<string, unknown>): RequestedHyperparameters {
  const method = body.method as { type?: unknown; supervised?: { hyperparameters?: unknown } } | undefined;
  if (method !== undefined && (typeof method !== 'object' || method === null || method.type !== 'supervised')) {
    throw new JobApiError(400, `method.type must be 'supervised' (the only method floe trains), got ${JSON.stringify((method as { type?: unknown } | null)?.type)}`, 'method', 'invalid_value');
  }
  if (body.hyperparameters != null && method?.supervised?.hyperparameters != null) {
    throw new JobApiError(400, 'give hyperparameters once: at the top level or in method.supervised.hyperparameters, not both', 'hyperparameters', 'invalid_value');
  }
  const raw = body.hyperparameters ?? method?.supervised?.hyperparameters ?? {};
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new JobApiError(400, 'hyperparameters must be an object', 'hyperparameters', 'invalid_value');
  const h = raw as Record<string, unknown>;
  for (const k of Object.keys(h)) {
    if (!(HYPERPARAMETERS as readonly string[]).includes(k)) throw new JobApiError(400, `unknown hyperparameter '${k}'; floe takes n_epochs, batch_size, learning_rate_multiplier (LoRA options go in 'floe')`, `hyperparameters.${k}`, 'invalid_value');
  }
  const pick = (k: keyof Hyperparameters, integer: boolean, max: number): number | 'auto' => {
    const v = h[k];
    if (v === undefined || v === 'auto') return 'auto';
    if (typeof v !== 'number' || !(v > 0 && v <= max) || (integer && !Number.isInteger(v))) {
      throw new JobApiError(400, `hyperparameters.${k} must be 'auto' or ${integer ? 'an integer' : 'a number'} in (0, ${max}], got ${JSON.stringify(v)}`, `hyperparameters.${k}`, 'invalid_value');
    }
    return v;
  };
  return { n_epochs: pick('n_epochs', true, 50), batch_size: pick('batch_size', true, 256), learning_rate_multiplier: pick('learning_rate_multiplier', false, 100) };
}

function floeOptions(v: unknown, maxRank: number): FloeJobOptions {
  if (v === undefined || v === null) v = {};
  if (typeof v !== 'object' || Array.isArray(v)) throw new JobApiError(400, 'floe must be an object of trainer options', 'floe', 'invalid_value');
  const o = v as Record<string, unknown>;
  for (const k of Object.keys(o)) {
    if (!(FLOE_KEYS as readonly string[]).includes(k)) throw new JobApiError(400, `unknown floe option '${k}'; one of ${FLOE_KEYS.join(', ')}`, `floe.${k}`, 'invalid_value');
  }
  // counts (steps, lengths, ranks) stay below 2^31: 1e308 or 2^53 + 2 passed as integers, and a job of 1e308 steps
  // trained until cancelled
  const num = (k: string, integer: boolean, min: number, dflt: number | null, below = integer ? 2 ** 31 : Infinity): number | null => {
    const x = o[k];
    if (x === undefined || x === null) return dflt;
    if (typeof x !== 'number' || !(x >= min && x < below) || (integer && !Number.isInteger(x))) {
      throw new JobApiError(400, `floe.${k} must be ${integer ? 'an integer' : 'a number'} >= ${min}${below < Infinity ? ` and < ${below}` : ''}, got ${JSON.stringify(x)}`, `floe.${k}`, 'invalid_value');
    }
    return x;
  };
  const rank = num('lora_rank', true, 1, 8)!;
  // refused now, not after training: the finished adapter is served by this server, which refuses higher ranks
  if (rank > maxRank) throw new JobApiError(400, `floe.lora_rank ${rank} is above this server's --max-lora-rank ${maxRank}; its adapter could not be served`, 'floe.lora_rank', 'invalid_value');
  let targets: LoraTarget[] = [...LORA_TARGETS];
  if (o.lora_targets !== undefined) {
    const t = o.lora_targets;
    if (!(typeof t === 'string' || (Array.isArray(t) && t.every((x) => typeof x === 'string')))) throw new JobApiError(400, 'floe.lora_targets must be a list of q, k, v, o, gate, up, down (or a comma-separated string)', 'floe.lora_targets', 'invalid_value');
    try { targets = parseLoraTargets(Array.isArray(t) ? t.join(',') : t); } catch (e) { throw new JobApiError(400, `floe.lora_targets: ${(e as Error).message}`, 'floe.lora_targets', 'invalid_value'); }
  }
  const alpha = num('lora_alpha', false, Number.MIN_VALUE, defaultLoraAlpha(rank))!;
  return {
    lora_rank: rank, lora_alpha: alpha, lora_targets: targets, lora_dropout: num('lora_dropout', false, 0, 0, 1)!,
    max_steps: num('max_steps', true, 1, null), save_steps: num('save_steps', true, 1, 10)!, eval_steps: num('eval_steps', true, 1, null),
    max_seq_len: num('max_seq_len', true, 2, null), warmup_steps: num('warmup_steps', true, 0, 0)!,
  };
}

function childPath(): string {
  const ext = extname(fileURLToPath(import.meta.url));
  return fileURLToPath(new URL(`./child${ext}`, import.meta.url));
}

/** The server's node flags; a TypeScript child (tests run from source) also needs the tsx loader. */
function childExecArgv(): string[] {
  const args = process.execArgv.filter((a) => !a.startsWith('--test'));
  if (extname(fileURLToPath(import.meta.url)) === '.ts' && !args.some((a) => a.includes('tsx'))) args.unshift('--import', import.meta.resolve('tsx'));
  return args;
}

/** The base dtype a checkpoint was trained on (its trainer state's options.dtype); undefined: as stored, or unreadable
 *  (the trainer's resume then says why). */
function recordedDtype(dir: string): LoadDType | undefined {
  try {
    const st = JSON.parse(readFileSync(join(dir, STATE_FILE), 'utf8')) as { options?: { dtype?: LoadDType | null } };
    return st.options?.dtype ?? undefined;
  } catch {
    return undefined;
  }
}

/** A trainer a killed server left behind (its IPC parent gone) is stopped before the job resumes in a new one. */
async function killStale(pid: number): Promise<void> {
  let cmd = '';
  try { cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8'); } catch { return; } // gone (or no procfs)
  if (!/jobs[/\\]child\.(js|ts)/.test(cmd)) return; // the pid was reused by something else
  try { process.kill(pid, 'SIGKILL'); } catch { return; }
  for (let i = 0; i < 100 && existsSync(`/proc/${pid}`); i++) await new Promise((r) => setTimeout(r, 50));
}
