// Predicted Outputs, replayed: the verify steps and rows a prediction draft policy takes on floe-brown's greedy
// answers, exactly (a greedy output does not depend on the drafts, so each step's kept tokens follow from it).
// Predictions as bench/prediction.ts makes them: (a) the answer itself, (b) 1 word in `--edit` replaced by a Brown
// word, (c) unrelated text. Prints, per variant: steps, output tokens per step, and rows verified per output token.
//
// usage: node --import tsx bench/prediction-replay.ts [--prompts 16] [--max-tokens 128] [--edit 0.1] [--seeds 3]

import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { generate } from '../src/model/generate.js';
import { openModel } from '../src/model/open.js';
import { PredictionK, PredictionTracker, DEFAULT_NUM_PREDICTION_TOKENS, wordStartTable } from '../src/model/prediction.js';
import { tokenBytes } from '../src/engine/constrained/token-mask.js';
import { loadBrown, splitBrown } from '../src/train/corpus.js';
import { machineInfo, machineLine } from './machine.js';

const ROOT = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const arg = (name: string, dflt: string): string => { const i = process.argv.indexOf(name); return i >= 0 ? process.argv[i + 1]! : dflt; };
const numPrompts = Number(arg('--prompts', '16'));
const maxTokens = Number(arg('--max-tokens', '128'));
const editRate = Number(arg('--edit', '0.1'));
const seeds = Number(arg('--seeds', '3'));
const from = Number(arg('--from', '11')); // prompt i is held-out passage from + 37 i (bench/prediction.ts's at 11)
const K = Number(arg('--k', String(DEFAULT_NUM_PREDICTION_TOKENS)));
// a verify row past the first, in decode steps (floe-brown, 2 threads: 16 rows cost ~3.2 steps in bench/verify-ops.ts)
const rowCost = Number(arg('--row-cost', '0.15'));

export interface Replay { steps: number; rows: number; tokens: number; accepted: number }

/** Steps of decoding `output` after `prompt` with drafts from `prediction` (the engine's policy). */
export function replay(prompt: readonly number[], output: readonly number[], prediction: readonly number[], words: Uint8Array | null, k = K): Replay {
  const tracker = new PredictionTracker(prediction, words);
  const pk = new PredictionK(k);
  const tokens = [...prompt, output[0]!]; // the first token comes from prefill
  let steps = 0;
  let rows = 0;
  let accepted = 0;
  while (tokens.length - prompt.length < output.length) {
    const done = tokens.length - prompt.length;
    const room = output.length - done - 1;
    const want = Math.min(pk.next(), room);
    const draft = want > 0 ? tracker.draft(tokens, prompt.length, want) : [];
    steps++;
    rows += 1 + draft.length;
    if (draft.length === 0) {
      pk.tick();
      tokens.push(output[done]!);
      continue;
    }
    let a = 0;
    while (a < draft.length && draft[a] === output[done + a]) a++;
    pk.update(draft.length, a);
    accepted += a;
    for (let j = 0; j <= a && done + j < output.length; j++) tokens.push(output[done + j]!);
  }
  return { steps, rows, tokens: output.length - 1, accepted };
}

async function main(): Promise<void> {
  console.log(`machine: ${machineLine(machineInfo())}`);
  const { model, tokenizer } = await openModel(path.join(ROOT, 'models', 'floe-brown'));
  const tok = tokenizer!;
  const words = arg('--words', 'on') === 'on' ? wordStartTable(tokenBytes(tok)) : null;
  const held = splitBrown(loadBrown()).heldOut;
  const brownWords = held.join(' ').split(/\s+/).slice(0, 5000);
  const totals = new Map<string, Replay>();
  const add = (name: string, r: Replay): void => {
    const t = totals.get(name) ?? { steps: 0, rows: 0, tokens: 0, accepted: 0 };
    totals.set(name, { steps: t.steps + r.steps, rows: t.rows + r.rows, tokens: t.tokens + r.tokens, accepted: t.accepted + r.accepted });
  };
  for (let pi = 0; pi < numPrompts; pi++) {
    const promptText = held[(from + 37 * pi) % held.length]!.slice(0, 300);
    const prompt = tok.encode(promptText, { addSpecialTokens: true });
    const res = generate(model, prompt, { maxTokens, sampling: { temperature: 0 } }); // greedy; stops at EOS, which the text leaves out
    const output = res.outputIds;
    const text = tok.decode(output, { skipSpecialTokens: true });
    if (output.length < 16) continue;
    add('(a) own answer', replay(prompt, output, output, words));
    for (let s = 0; s < seeds; s++) {
      let seed = 7 + 1000 * s + pi;
      const rnd = (): number => { seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0; return seed / 2 ** 32; };
      const edited = text.split(' ').map((w) => (rnd() < editRate ? brownWords[Math.floor(rnd() * brownWords.length)]! : w)).join(' ');
      add('(b) edited', replay(prompt, output, tok.encode(edited, { addSpecialTokens: false }), words));
    }
    add('(c) unrelated', replay(prompt, output, tok.encode(held[(pi * 53 + 200) % held.length]!.slice(0, text.length), { addSpecialTokens: false }), words));
  }
  console.log(`floe-brown greedy answers, ${numPrompts} prompts, ${maxTokens} tokens, edit rate ${editRate}, ${seeds} edit seeds, k ${K}`);
  console.log(`prediction          steps  tokens/step  rows/token  accepted/token  decode speedup at ${rowCost} step/row`);
  for (const [name, r] of totals) {
    console.log(`${name.padEnd(18)} ${String(r.steps).padStart(6)}  ${(r.tokens / r.steps).toFixed(2).padStart(11)}  ${(r.rows / r.tokens).toFixed(2).padStart(10)}  ${(r.accepted / r.tokens).toFixed(2).padStart(14)}  ${(r.tokens / (r.steps + rowCost * (r.rows - r.steps))).toFixed(2).padStart(10)}`);
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) await main();
