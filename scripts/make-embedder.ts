// Builds models/floe-embed (v2) by continuing v1 (models/floe-embed as committed in 149c52d: floe-brown + 480 contrastive
// steps, the recipe in its README's history): contrastive pairs with BM25-mined hard negatives (scripts/make-embed-pairs.ts)
// -> full fine-tuning with InfoNCE (`floe finetune --objective contrastive`) -> export (f32, embedding_config.json) ->
// held-out retrieval eval.
// Usage: node --import tsx scripts/make-embedder.ts [all|init|pairs|train|export|eval]   (train resumes from its checkpoints)
import { execFileSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { run as floe } from '../src/cli/main.js';
import { listCheckpoints } from '../src/train/checkpoint.js';
import { DEFAULT_PAIRS, writePairs } from './make-embed-pairs.js';

const ROOT = new URL('..', import.meta.url).pathname;
const WORK = join(ROOT, 'data', 'work', 'floe-embed'); // git-ignored
const PAIRS = join(WORK, 'pairs.jsonl');
const RUNS = [join(WORK, 'train'), join(WORK, 'train3')]; // phase 1 from v1, phase 2 from phase 1's final
const RUN = RUNS[RUNS.length - 1]!;
export const MODEL = join(ROOT, 'models', 'floe-embed');
const V1_COMMIT = '149c52d';
const BASE = join(WORK, 'v1'); // v1 restored from git, so that re-running after export still starts from v1

/** The exact `floe finetune` arguments: full fine-tuning, 64 pairs per step (63 in-batch + up to 64 mined negatives each), τ 0.05, mean pooling without BOS, symmetric InfoNCE (the objective's defaults). */
const COMMON = [
  '--objective', 'contrastive', '--temperature', '0.05', '--pooling', 'mean', '--full', '--warmup-steps', '10', '--lr-schedule', 'cosine',
  '--batch-size', '64', '--max-seq-len', '128', '--max-grad-norm', '1', '--save-total-limit', '1', '--backend', 'native', '--threads', '1',
];
/** Two cosine cycles over the same pairs: 200 steps at lr 3e-4 (seed 0), then 250 at 2e-4 (seed 1: another order). */
export const PHASES = [
  [...COMMON, '--lr', '3e-4', '--max-steps', '200', '--save-steps', '40', '--seed', '0'],
  [...COMMON, '--lr', '2e-4', '--max-steps', '250', '--save-steps', '50', '--seed', '1'],
];

function init(): void {
  mkdirSync(BASE, { recursive: true });
  for (const f of ['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json', 'embedding_config.json']) {
    writeFileSync(join(BASE, f), execFileSync('git', ['show', `${V1_COMMIT}:models/floe-embed/${f}`], { cwd: ROOT, maxBuffer: 1 << 28 }));
  }
  log(`v1 (${V1_COMMIT}) -> ${BASE}`);
}

const SERVE_MAX_TOKENS = 512;
const log = (s: string) => process.stderr.write(`[make-embedder] ${s}\n`);

async function train(): Promise<void> {
  for (const [i, run] of RUNS.entries()) {
    if (existsSync(join(run, 'final', 'model.safetensors'))) { log(`${run}: done`); continue; }
    const from = i === 0 ? BASE : join(RUNS[i - 1]!, 'final');
    const resume = listCheckpoints(run).length > 0 ? ['--resume', run] : ['--overwrite'];
    const args = ['finetune', '--model', from, '--data', PAIRS, ...PHASES[i]!, '--out', run, ...resume];
    log(`floe ${args.join(' ')}`);
    const rc = await floe(args);
    if (rc !== 0) throw new Error(`floe finetune exited with ${rc}`);
  }
}

function exportModel(): void {
  const final = join(RUN, 'final');
  if (!existsSync(join(final, 'model.safetensors'))) throw new Error(`${final}: no trained model yet (run the train stage)`);
  rmSync(join(MODEL, 'model.safetensors'), { force: true });
  mkdirSync(MODEL, { recursive: true });
  for (const f of ['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json']) cpSync(join(final, f), join(MODEL, f));
  // trained on texts of at most 128 tokens; inputs up to SERVE_MAX_TOKENS are accepted (mean pooling, context 1024)
  const ec = JSON.parse(readFileSync(join(final, 'embedding_config.json'), 'utf8')) as Record<string, unknown>;
  writeFileSync(join(MODEL, 'embedding_config.json'), JSON.stringify({ ...ec, max_tokens: SERVE_MAX_TOKENS, trained_max_tokens: ec.max_tokens }, null, 1) + '\n');
  log(`exported -> ${MODEL}`);
}

async function evalModel(): Promise<void> {
  const { main } = await import('../bench/retrieval.js');
  await main(['--model', MODEL, '--baselines', '--out', join(WORK, 'eval.json')]);
}

const stages: Record<string, () => void | Promise<void>> = {
  init,
  pairs: () => { log(`${PAIRS}: ${JSON.stringify(writePairs(PAIRS, DEFAULT_PAIRS))}`); },
  train, export: exportModel, eval: evalModel,
};

const want = process.argv[2] ?? 'all';
for (const [name, fn] of Object.entries(stages)) {
  if (want !== 'all' && want !== name) continue;
  log(`stage ${name}`);
  await fn();
}
if (want !== 'all' && !(want in stages)) throw new Error(`unknown stage ${want}; one of all, ${Object.keys(stages).join(', ')}`);
