// Builds models/floe-embed (v3) by continuing v2 (models/floe-embed as committed in 3791495, whose own recipe is in its
// README's history and in this script's git history): contrastive pairs with BM25-mined hard negatives for every pair
// (scripts/make-embed-pairs.ts, V3_PAIRS) -> full fine-tuning with InfoNCE (`floe finetune --objective contrastive`)
// -> export (f32, embedding_config.json) -> held-out retrieval eval.
// Usage: node --import tsx scripts/make-embedder.ts [all|init|pairs|train|export|eval]   (train resumes from its checkpoints)
import { execFileSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { run as floe } from '../src/cli/main.js';
import { listCheckpoints } from '../src/train/checkpoint.js';
import { V3_PAIRS, writePairs } from './make-embed-pairs.js';
import { packageRoot } from '../src/model/builtin.js';

const ROOT = packageRoot();
const WORK = join(ROOT, 'data', 'work', 'floe-embed'); // git-ignored
const PAIRS = join(WORK, 'pairs-v3.jsonl');
const RUNS = [join(WORK, 'train-v3'), join(WORK, 'train-v3b'), join(WORK, 'train-v3c')]; // each phase from the previous one's final
/** Steps per phase; each reads the next STEPS × 64 pairs of the file in order, so the three make one epoch (183,744 pairs, 2,871 steps). */
const STEPS = [900, 1000, 971], BATCH = 64;
/** Phase i's data: the pairs file from the first line no earlier phase read. */
const dataOf = (i: number): string => {
  const skip = STEPS.slice(0, i).reduce((a, b) => a + b, 0) * BATCH;
  if (skip === 0) return PAIRS;
  const file = join(WORK, `pairs-v3-from-${skip}.jsonl`);
  if (!existsSync(file)) writeFileSync(file, readFileSync(PAIRS, 'utf8').split('\n').filter((l) => l !== '').slice(skip).join('\n') + '\n');
  return file;
};
const RUN = RUNS[RUNS.length - 1]!;
export const MODEL = join(ROOT, 'models', 'floe-embed');
const BASE_COMMIT = '3791495'; // v2
const BASE = join(WORK, 'v2'); // v2 restored from git, so that re-running after export still starts from v2

/** The exact `floe finetune` arguments: full fine-tuning, 64 pairs per step (63 in-batch + 64 mined negatives each), τ 0.05, mean pooling without BOS, symmetric InfoNCE (the objective's defaults). */
const COMMON = [
  '--objective', 'contrastive', '--temperature', '0.05', '--pooling', 'mean', '--full', '--warmup-steps', '20', '--lr-schedule', 'cosine',
  '--batch-size', '64', '--max-seq-len', '128', '--max-grad-norm', '1', '--save-total-limit', '2', '--backend', 'native', '--threads', '2', '--no-shuffle',
];
/** Three cosine cycles over the v3 pairs in the file's order (runs of 64 pairs from one source: one run per step), each
 * over the pairs that follow the previous one's (no pair is seen twice): from v2 at lr 1.5e-4, then two at 1e-4. */
export const PHASES = STEPS.map((steps, i) => [...COMMON, '--lr', i === 0 ? '1.5e-4' : '1e-4', '--max-steps', String(steps), '--save-steps', '100', '--seed', String(2 + i)]);

function init(): void {
  mkdirSync(BASE, { recursive: true });
  for (const f of ['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json', 'embedding_config.json']) {
    writeFileSync(join(BASE, f), execFileSync('git', ['show', `${BASE_COMMIT}:models/floe-embed/${f}`], { cwd: ROOT, maxBuffer: 1 << 28 }));
  }
  log(`v2 (${BASE_COMMIT}) -> ${BASE}`);
}

const SERVE_MAX_TOKENS = 512;
const log = (s: string) => process.stderr.write(`[make-embedder] ${s}\n`);

async function train(): Promise<void> {
  for (const [i, run] of RUNS.entries()) {
    if (existsSync(join(run, 'final', 'model.safetensors'))) { log(`${run}: done`); continue; }
    const from = i === 0 ? BASE : join(RUNS[i - 1]!, 'final');
    const resume = listCheckpoints(run).length > 0 ? ['--resume', run] : ['--overwrite'];
    const args = ['finetune', '--model', from, '--data', dataOf(i), ...PHASES[i]!, '--out', run, ...resume];
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
  const { main } = await import('../bench/rag-retrieval.js'); // the README's table: LanceDB BM25, dense, hybrid
  await main(['--model', MODEL, '--out', join(WORK, 'eval.json')]);
}

const stages: Record<string, () => void | Promise<void>> = {
  init,
  pairs: () => { log(`${PAIRS}: ${JSON.stringify(writePairs(PAIRS, V3_PAIRS))}`); },
  train, export: exportModel, eval: evalModel,
};

const want = process.argv[2] ?? 'all';
for (const [name, fn] of Object.entries(stages)) {
  if (want !== 'all' && want !== name) continue;
  log(`stage ${name}`);
  await fn();
}
if (want !== 'all' && !(want in stages)) throw new Error(`unknown stage ${want}; one of all, ${Object.keys(stages).join(', ')}`);
