// Builds models/floe-embed from models/floe-brown: contrastive pairs (scripts/make-embed-pairs.ts) -> full fine-tuning
// with InfoNCE (`floe finetune --objective contrastive`) -> export (f32, embedding_config.json) -> held-out retrieval eval.
// Usage: node --import tsx scripts/make-embedder.ts [all|pairs|train|export|eval]   (train resumes from its checkpoints)
import { cpSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { run as floe } from '../src/cli/main.js';
import { listCheckpoints } from '../src/train/checkpoint.js';
import { DEFAULT_PAIRS, writePairs } from './make-embed-pairs.js';

const ROOT = new URL('..', import.meta.url).pathname;
const WORK = join(ROOT, 'data', 'work', 'floe-embed'); // git-ignored
const PAIRS = join(WORK, 'pairs.jsonl');
const RUN = join(WORK, 'train');
const BASE = join(ROOT, 'models', 'floe-brown');
export const MODEL = join(ROOT, 'models', 'floe-embed');

/** The exact `floe finetune` arguments: full fine-tuning, 64 pairs per step (63 in-batch negatives each), τ 0.05, mean pooling without BOS, symmetric InfoNCE (the objective's defaults). */
export const TRAIN_ARGS = [
  '--objective', 'contrastive', '--temperature', '0.05', '--pooling', 'mean', '--full', '--lr', '5e-4', '--warmup-steps', '20',
  '--lr-schedule', 'cosine', '--max-steps', '480', '--batch-size', '64', '--max-seq-len', '128', '--max-grad-norm', '1',
  '--save-steps', '40', '--save-total-limit', '1', '--seed', '0', '--backend', 'native',
];

const SERVE_MAX_TOKENS = 512;
const log = (s: string) => process.stderr.write(`[make-embedder] ${s}\n`);

async function train(): Promise<void> {
  const resume = listCheckpoints(RUN).length > 0 ? ['--resume', RUN] : ['--overwrite'];
  const args = ['finetune', '--model', BASE, '--data', PAIRS, ...TRAIN_ARGS, '--out', RUN, ...resume];
  log(`floe ${args.join(' ')}`);
  const rc = await floe(args);
  if (rc !== 0) throw new Error(`floe finetune exited with ${rc}`);
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
