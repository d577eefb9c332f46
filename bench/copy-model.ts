// Builds bench/.cache/floe-brown-copy: floe-brown fine-tuned (full) on Brown text mixed with records that repeat what
// they have just shown (a passage twice; a run of random Brown words two or three times), so that the model learns to
// copy: what a real LLM does when it edits a passage, answers from a document or repeats code, and what model-free
// speculation bets on. floe-brown itself barely continues a passage it was shown (acceptance ~0.4), which caps any
// speculative speedup on copying workloads. Not shipped; reproducible (seeded) and resumable.
// Measured (session 11, BENCHMARKS.md): 600 steps move the held-out loss of repeated passages only 4.41 -> 4.38 and
// ngram acceptance on the copying workloads from ~0.41 to 0.49-0.56 (1.26-1.35x): a 5.5 M model does not learn to copy
// natural passages from 2.4 M tokens of this mix. A starting point for a longer run, not a model that copies yet.
//
// usage: node --import tsx bench/copy-model.ts [--steps 600]
// Prints held-out loss (plain Brown, and passage-repeat records) before and after.

import { cpSync, existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadBrown, splitBrown } from '../src/train/corpus.js';
import { openModel } from '../src/model/open.js';
import { heldOutLoss } from '../src/train/perplexity.js';
import { pretrain } from '../scripts/pretrain-stage.js';
import { CACHE_DIR } from './harness/build.js';

const ROOT = join(fileURLToPath(new URL('.', import.meta.url)), '..');
const BASE = join(ROOT, 'models', 'floe-brown');
const WORK = join(CACHE_DIR, 'copy-work');
const OUT = join(CACHE_DIR, 'floe-brown-copy');
const log = (s: string): void => { process.stderr.write(`[copy-model] ${s}\n`); };

const stepsArg = process.argv.indexOf('--steps');
const STEPS = stepsArg >= 0 ? Number(process.argv[stepsArg + 1]) : 600;
if (!Number.isInteger(STEPS) || STEPS < 1) throw new Error(`--steps must be a positive integer, got ${process.argv[stepsArg + 1]}`);

const ARGS = [
  '--full', '--lr', '1.5e-3', '--warmup-steps', '20', '--lr-schedule', 'cosine', '--batch-tokens', '4096', '--max-seq-len', '256',
  '--weight-decay', '0.1', '--max-grad-norm', '1', '--save-steps', '100', '--save-total-limit', '1', '--eval-steps', '100',
  '--seed', '0', '--backend', 'native',
];

let seed = 20261204;
function rnd(): number {
  seed = (seed * 1103515245 + 12345) >>> 0;
  return seed / 2 ** 32;
}

function passage(text: string, chars: number): string {
  const sentences = text.replace(/\s+/g, ' ').match(/[^.!?]+[.!?]+["')]*\s*/g) ?? [text];
  let out = '';
  for (const s of sentences) { if (out.length > 0 && out.length + s.length > chars) break; out += s; }
  return out.trim();
}

function copyMix(records: readonly string[], words: readonly string[]): { mixed: string[]; repeats: string[] } {
  const mixed: string[] = [];
  const repeats: string[] = [];
  for (const r of records) {
    const u = rnd();
    if (u < 0.3) { mixed.push(r); continue; }
    if (u < 0.65) {
      const p = passage(r, 200 + Math.floor(rnd() * 300));
      const t = `${p}\n\n${p}`;
      mixed.push(t);
      repeats.push(t);
      continue;
    }
    // random words: nothing to predict but by copying
    const run = Array.from({ length: 8 + Math.floor(rnd() * 24) }, () => words[Math.floor(rnd() * words.length)]!).join(' ');
    mixed.push(Array.from({ length: 2 + Math.floor(rnd() * 2) }, () => run).join('\n'));
  }
  return { mixed, repeats };
}

const jsonl = (texts: readonly string[]): string => texts.map((text) => JSON.stringify({ text })).join('\n') + '\n';

async function lossReport(dir: string, plain: string[], repeats: string[]): Promise<Record<string, number>> {
  const m = await openModel(dir, { backend: 'native' });
  const out = {
    brown_heldout: heldOutLoss(m.model, m.tokenizer!, plain, { maxSeqLen: 256 }).loss,
    copy_heldout: heldOutLoss(m.model, m.tokenizer!, repeats, { maxSeqLen: 256 }).loss,
  };
  m.loaded.dispose();
  return out;
}

mkdirSync(WORK, { recursive: true });
const split = splitBrown(loadBrown());
const words = [...new Set(split.train.join(' ').split(/\s+/).filter((w) => /^[a-z]{3,}$/.test(w)))];
const train = copyMix(split.train, words);
const held = copyMix(split.heldOut, words);
writeFileSync(join(WORK, 'train.jsonl'), jsonl(train.mixed));
writeFileSync(join(WORK, 'eval.jsonl'), jsonl(held.mixed.slice(0, 60)));
log(`${train.mixed.length} training records (${train.repeats.length} repeat a passage), ${words.length} words`);

const run = join(WORK, 'run');
await pretrain({ init: BASE, data: join(WORK, 'train.jsonl'), eval: join(WORK, 'eval.jsonl'), run, steps: STEPS, args: ARGS, log });
rmSync(OUT, { recursive: true, force: true });
mkdirSync(OUT, { recursive: true });
for (const f of ['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json', 'generation_config.json']) {
  const src = existsSync(join(run, 'final', f)) ? join(run, 'final', f) : join(BASE, f);
  cpSync(src, join(OUT, f));
}
const plain = split.heldOut.slice(0, 200);
const before = await lossReport(BASE, plain, held.repeats.slice(0, 100));
const after = await lossReport(OUT, plain, held.repeats.slice(0, 100));
writeFileSync(join(OUT, 'copy-report.json'), JSON.stringify({ steps: STEPS, args: ARGS, before, after }, null, 1) + '\n');
log(`held-out loss, floe-brown -> copy-tuned: Brown ${before.brown_heldout.toFixed(3)} -> ${after.brown_heldout.toFixed(3)}, `
  + `repeated passages ${before.copy_heldout.toFixed(3)} -> ${after.copy_heldout.toFixed(3)}`);
log(`wrote ${OUT}`);
