// Records a decode loop's step times by verify rows on a real model (default: the built-in floe-brown), for
// `speculative-replay.ts --steps FILE`: the controllers are then replayed against this host's real timing (its
// spread, stalls, the cost of a verify just after another) without its drift between runs.
//
//   node --import tsx bench/record-steps.ts [--model DIR] [--threads 2] [--prompts 12] [--k 6] [--out FILE]
// A step's time is the gap between the first tokens of consecutive steps (generate()'s onToken); a step drafted when
// the proposer was called since the last token. Plain decoding of each prompt gives the 1-row steps. The proposer drafts the target's own greedy tokens, each right with
// probability 0.65, so k adapts and every row count 1..k+1 occurs in the order decoding gives it.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { generate } from '../src/model/generate.js';
import { openModel } from '../src/model/open.js';
import type { Proposer } from '../src/model/speculation.js';
import { loadBrown, splitBrown } from '../src/train/corpus.js';
import { machineInfo, machineLine } from './machine.js';

const ROOT = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const arg = (name: string, dflt: string): string => { const i = process.argv.indexOf(`--${name}`); return i >= 0 ? process.argv[i + 1]! : dflt; };
const dir = arg('model', path.join(ROOT, 'models', 'floe-brown'));
const K = Number(arg('k', '6'));
const out = arg('out', path.join(ROOT, 'bench', 'results', `steps-${path.basename(dir)}.json`));

console.log(`machine: ${machineLine(machineInfo())}`);
const opened = await openModel(dir, { threads: Number(arg('threads', '2')) });
const tok = opened.tokenizer!;
const held = splitBrown(loadBrown()).heldOut;
const prompts = Array.from({ length: Number(arg('prompts', '12')) }, (_, i) => tok.encode(held[(7 + i * 37) % held.length]!).slice(0, 120));
const opts = { maxTokens: 128, sampling: { temperature: 0 }, stopTokenIds: [] as number[], speculativeCosts: false };
let seed = 12345;
const rnd = (): number => { seed = (Math.imul(seed, 1103515245) + 12345) >>> 0; return seed / 2 ** 32; };
const byRows: Record<number, number[]> = {};
const BURST_MS = 0.1;
for (const p of prompts) {
  // plain decoding first (its steps are the 1-row samples, as most of a speculating loop's are), and its tokens
  let plainLast = -1;
  const want = generate(opened.model, p, {
    ...opts,
    onToken: () => {
      const now = performance.now();
      if (plainLast >= 0) (byRows[1] ??= []).push(+(now - plainLast).toFixed(4));
      plainLast = now;
    },
  }).outputIds;
  let drafted = 0; // draft tokens of the step under way (0: a plain step)
  const proposer: Proposer = {
    name: 'mixed',
    propose: (rs) => rs.map((r) => {
      drafted = r.k;
      return { tokens: Array.from({ length: r.k }, (_, j) => (rnd() < 0.65 ? want[r.tokens.length - r.promptLen + j] ?? 5 : 5)) };
    }),
  };
  for (let rep = 0; rep < 3; rep++) {
    let last = -1, prev = -1;
    generate(opened.model, p, {
      ...opts, speculative: proposer, numSpeculativeTokens: K,
      onToken: () => {
        const now = performance.now();
        // a verify step's tokens come together (µs apart); a step takes hundreds of µs
        if (prev >= 0 && now - prev < BURST_MS) { prev = now; return; }
        if (last >= 0) (byRows[1 + drafted] ??= []).push(+(now - last).toFixed(4));
        drafted = 0;
        last = prev = now;
      },
    });
  }
}
fs.writeFileSync(out, JSON.stringify(byRows));
for (const [r, v] of Object.entries(byRows)) {
  const s = [...v].sort((a, b) => a - b);
  console.log(`rows ${r}: ${s.length} steps, median ${s[s.length >> 1]} ms, p90 ${s[Math.floor(s.length * 0.9)]} ms, max ${s.at(-1)} ms`);
}
console.log(`wrote ${out}`);
