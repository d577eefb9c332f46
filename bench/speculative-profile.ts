// Where a speculative decode step's time goes on floe-brown: propose / forward (plain decode step vs verify) / the
// rest (verify, accept, JS glue), per step, next to plain decode, in-process through generate() and through an
// Engine stepped in this thread (the worker's loop without the worker).
//
// usage: node --import tsx bench/speculative-profile.ts [--threads N] [--max-tokens 128] [--k 4] [--reps 2] [--modes ngram,suffix,draft]
//          [--target DIR] [--draft DIR]
// Times are process CPU time (robust to other processes, unlike wall time); with --threads 1 they are per step.

import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Engine } from '../src/engine/engine.js';
import { generate } from '../src/model/generate.js';
import { openModel } from '../src/model/open.js';
import { createProposer, type Proposer } from '../src/model/speculation.js';
import { loadBrown, splitBrown } from '../src/train/corpus.js';
import { machineInfo, machineLine } from './machine.js';

const ROOT = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const arg = (name: string, dflt: string): string => { const i = process.argv.indexOf(name); return i >= 0 ? process.argv[i + 1]! : dflt; };
const threads = Number(arg('--threads', String(Math.min(2, os.availableParallelism()))));
const maxTokens = Number(arg('--max-tokens', '128'));
const K = Number(arg('--k', '4'));
const reps = Number(arg('--reps', '2'));
const modes = arg('--modes', 'ngram,suffix,draft').split(',');
const target = arg('--target', path.join(ROOT, 'models', 'floe-brown'));
const draftDir = arg('--draft', path.join(ROOT, 'models', 'floe-brown-draft'));

const cpuMs = (): number => { const c = process.cpuUsage(); return (c.user + c.system) / 1000; };

async function main(): Promise<void> {
  console.log(`machine: ${machineLine(machineInfo())}`);
  const t = await openModel(target, { backend: 'native', threads });
  const model = t.model;
  const draft = modes.includes('draft') ? await openModel(draftDir, { backend: 'native', threads }) : null;
  const tok = t.tokenizer!;
  const held = splitBrown(loadBrown()).heldOut;
  const prompts = [0, 1, 2, 3].map((i) => tok.encode(held[(7 + 37 * i) % held.length]!.slice(0, 900)).slice(0, 160));
  // wrap forward: wall and count, split by rows fed
  const fwd = { one: { n: 0, ms: 0 }, many: { n: 0, ms: 0, rows: 0 }, pre: 0 };
  const forward = model.forward.bind(model);
  (model as { forward: typeof model.forward }).forward = (inp, kv, hiddenOut, logitsOut) => {
    const t0 = cpuMs();
    const r = forward(inp, kv, hiddenOut, logitsOut);
    const dt = cpuMs() - t0;
    const T = inp.tokens.length;
    if (T === 1) { fwd.one.n++; fwd.one.ms += dt; } else if (T <= 16) { fwd.many.n++; fwd.many.ms += dt; fwd.many.rows += T; } else fwd.pre += dt;
    return r;
  };
  const baseCpu = new Map<string, number>(); // plain decode CPU ms of the latest 'none' run, per path
  const run = (mode: string, via: 'generate' | 'engine'): void => {
    fwd.one = { n: 0, ms: 0 }; fwd.many = { n: 0, ms: 0, rows: 0 }; fwd.pre = 0;
    let propMs = 0;
    let proposer: Proposer | undefined;
    if (mode !== 'none') {
      const inner = createProposer(mode === 'draft' ? draft!.model : (mode as 'ngram'), model);
      proposer = {
        name: inner.name,
        propose: (reqs) => { const t0 = cpuMs(); const r = inner.propose(reqs); propMs += cpuMs() - t0; return r; },
        init: inner.init?.bind(inner), kvBytesPerToken: inner.kvBytesPerToken, observe: inner.observe?.bind(inner), release: inner.release?.bind(inner), learn: inner.learn?.bind(inner),
      };
    }
    let gen = 0, acc = 0, prop = 0;
    const c0 = cpuMs();
    if (via === 'generate') {
      for (const p of prompts) {
        const r = generate(model, p, { maxTokens, sampling: { temperature: 0 }, stopTokenIds: [], ...(proposer ? { speculative: proposer, numSpeculativeTokens: K } : {}) });
        gen += r.outputIds.length;
        acc += r.timings.speculative?.accepted ?? 0; prop += r.timings.speculative?.proposed ?? 0;
      }
    } else {
      const engine = new Engine(model, null, { speculative: proposer, numSpeculativeTokens: K, maxNumSeqs: 1 });
      prompts.forEach((p, i) => engine.add({
        kind: 'generate', id: `p${i}`, promptIds: p, maxTokens, n: 1, stop: [], stopTokenIds: [], ignoreEos: true, logprobs: null, promptLogprobs: null, skipSpecialTokens: true,
        sampling: { temperature: 0, topP: 1, topK: 0, minP: 0, repetitionPenalty: 1, presencePenalty: 0, frequencyPenalty: 0, seed: null, logitBias: null },
      }));
      while (engine.scheduler.hasWork) for (const o of engine.step()) if (o.kind === 'generate') gen += o.tokenIds.length;
      const st = engine.stats();
      acc = st.specAcceptedTokens ?? 0; prop = st.specDraftTokens ?? 0;
    }
    const cpu = cpuMs() - c0;
    const steps = fwd.one.n + fwd.many.n; // prefill (> 16 tokens) counted apart
    const decodeCpu = cpu - fwd.pre;
    if (mode === 'none') baseCpu.set(via, decodeCpu);
    const fw = fwd.one.ms + fwd.many.ms;
    const glue = decodeCpu - fw - propMs;
    const per = (x: number): string => (x / Math.max(1, steps)).toFixed(3);
    console.log(`${via.padEnd(8)} ${mode.padEnd(7)} tokens ${gen} steps ${steps} (${(gen / steps).toFixed(2)} tok/step) accept ${prop ? (acc / prop).toFixed(2) : '-'} | decode cpu ${decodeCpu.toFixed(0)} ms (${((baseCpu.get(via) ?? decodeCpu) / decodeCpu).toFixed(2)}x plain)` +
      ` | per step ms: forward(1 row) ${(fwd.one.ms / Math.max(1, fwd.one.n)).toFixed(3)} x${fwd.one.n}, verify(${fwd.many.n ? (fwd.many.rows / fwd.many.n).toFixed(1) : 0} rows) ${(fwd.many.ms / Math.max(1, fwd.many.n)).toFixed(3)} x${fwd.many.n}` +
      `, propose ${per(propMs)}, rest ${per(glue)}`);
  };
  run('none', 'generate'); // warm-up
  for (let rep = 0; rep < reps; rep++) for (const via of ['generate', 'engine'] as const) for (const m of ['none', ...modes]) run(m, via);
  t.loaded.dispose();
  draft?.loaded.dispose();
}

main().catch((e: unknown) => { process.stderr.write(`${(e as Error).stack}\n`); process.exit(1); });
