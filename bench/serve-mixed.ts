// Long prompts among short ones through chunked prefill: how long a short request waits for its first token, and
// how its stream stalls, while long prefills run. floe serve on the built-in model, open-loop seeded arrivals.
//
// usage: node --import tsx bench/serve-mixed.ts [--root DIR] [--budget 64] [--seconds 60] [--long 700] [--short 16]
//          [--long-every 3] [--short-rate 3] [--threads 2] [--seed 1] [--label NAME] [--out FILE]
//
// --root: a built floe checkout to serve from (default: this one), so that two builds can be compared in one session
// (run them alternately: a 2-core host drifts). --budget is --max-batched-tokens: the smaller it is against --long,
// the more steps a long prefill spans and the more a short request can be held behind it.

import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { machineInfo, machineLine } from './machine.js';
import { streamCompletion, waitHealthy, type Target } from './serve-client.js';
import { dist, seededRandom, type Dist, type RequestRecord } from './serve-trace.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

interface Options { root: string; budget: number; seconds: number; long: number; short: number; longEvery: number; shortRate: number; threads: number; seed: number; label: string; out: string | null }

function parseArgs(argv: readonly string[]): Options {
  const o: Options = { root: ROOT, budget: 64, seconds: 60, long: 700, short: 16, longEvery: 3, shortRate: 3, threads: 2, seed: 1, label: '', out: null };
  const num = (v: string | undefined, a: string): number => {
    const n = Number(v);
    if (v === undefined || !(n > 0)) throw new Error(`${a} needs a positive number, got ${v}`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!, v = argv[i + 1];
    switch (a) {
      case '--root': if (!v) throw new Error('--root needs a directory'); o.root = path.resolve(v); i++; break;
      case '--budget': o.budget = num(v, a); i++; break;
      case '--seconds': o.seconds = num(v, a); i++; break;
      case '--long': o.long = num(v, a); i++; break;
      case '--short': o.short = num(v, a); i++; break;
      case '--long-every': o.longEvery = num(v, a); i++; break;
      case '--short-rate': o.shortRate = num(v, a); i++; break;
      case '--threads': o.threads = num(v, a); i++; break;
      case '--seed': o.seed = num(v, a); i++; break;
      case '--label': o.label = v ?? ''; i++; break;
      case '--out': if (!v) throw new Error('--out needs a file'); o.out = v; i++; break;
      default: throw new Error(`unknown argument ${a}`);
    }
  }
  return o;
}

interface Arrival { atS: number; kind: 'long' | 'short'; prompt: number[]; outputTokens: number }

/** Long prompts every longEvery s (from 0.5 s), short ones at Poisson shortRate/s; token ids of ordinary words. */
function workload(o: Options, vocab: number): Arrival[] {
  const r = seededRandom(o.seed);
  const ids = (n: number) => Array.from({ length: n }, () => 300 + Math.floor(r() * (vocab - 400)));
  const out: Arrival[] = [];
  for (let t = 0.5; t < o.seconds; t += o.longEvery) out.push({ atS: t, kind: 'long', prompt: ids(o.long), outputTokens: 16 });
  for (let t = -Math.log(1 - r()) / o.shortRate; t < o.seconds; t += -Math.log(1 - r()) / o.shortRate) out.push({ atS: t, kind: 'short', prompt: ids(o.short), outputTokens: 32 });
  return out.sort((a, b) => a.atS - b.atS);
}

function startServer(o: Options): Promise<{ proc: ChildProcess; url: string }> {
  const model = path.join(o.root, 'models', 'floe-brown');
  const proc = spawn(process.execPath, [path.join(o.root, 'bin', 'floe.js'), 'serve', '--model', model, '--port', '0', '--model-name', 'bench',
    '--threads', String(o.threads), '--max-batched-tokens', String(o.budget), '--max-num-seqs', '16', '--max-queue', '1000'], { stdio: ['ignore', 'pipe', 'pipe'] });
  return new Promise((resolve, reject) => {
    let log = '';
    const on = (d: Buffer) => {
      log += d.toString();
      const m = /listening on (http:\/\/\S+)/.exec(log);
      if (m) resolve({ proc, url: m[1]! });
    };
    proc.stdout!.on('data', on);
    proc.stderr!.on('data', on);
    proc.once('exit', (code) => reject(new Error(`floe serve exited with ${code}:\n${log}`)));
  });
}

interface ClassSummary { n: number; errors: number; ttftMs: Dist | null; maxGapMs: Dist | null; tpotMs: Dist | null; e2eMs: Dist | null }

function summarizeClass(recs: readonly RequestRecord[]): ClassSummary {
  const ok = recs.filter((r) => r.error === null && r.firstTokenMs !== null);
  const gaps = ok.filter((r) => r.tokenMs.length > 1).map((r) => Math.max(...r.tokenMs.slice(1).map((t, i) => t - r.tokenMs[i]!)));
  return {
    n: recs.length, errors: recs.length - ok.length,
    ttftMs: dist(ok.map((r) => r.firstTokenMs! - r.sentMs)),
    maxGapMs: dist(gaps), // a request's longest wait between two of its tokens
    tpotMs: dist(ok.filter((r) => r.outputTokens > 1).map((r) => (r.endMs - r.firstTokenMs!) / (r.outputTokens - 1))),
    e2eMs: dist(ok.map((r) => r.endMs - r.sentMs)),
  };
}

async function main(): Promise<void> {
  const o = parseArgs(process.argv.slice(2));
  const vocab = (JSON.parse(fs.readFileSync(path.join(o.root, 'models', 'floe-brown', 'config.json'), 'utf8')) as { vocab_size: number }).vocab_size;
  const arrivals = workload(o, vocab);
  const mach = machineInfo();
  console.log(machineLine(mach));
  console.log(`serve-mixed ${o.label}: root ${o.root}, --max-batched-tokens ${o.budget}, --threads ${o.threads}; ${arrivals.filter((a) => a.kind === 'long').length} long (${o.long} tokens, 16 out), ` +
    `${arrivals.filter((a) => a.kind === 'short').length} short (${o.short} tokens, 32 out) over ${o.seconds} s, seed ${o.seed}`);
  const { proc, url } = await startServer(o);
  try {
    await waitHealthy(url, 60_000, () => (proc.exitCode !== null ? `floe serve exited with ${proc.exitCode}` : null));
    const target: Target = { url, model: 'bench' };
    await streamCompletion(target, -1, arrivals[0]!.prompt.slice(0, 8), 2, performance.now()); // warm-up
    const t0 = performance.now();
    const recs = await Promise.all(arrivals.map((a, i) => new Promise<RequestRecord>((resolve) => {
      setTimeout(() => { void streamCompletion(target, i, a.prompt, a.outputTokens, t0).then(resolve); }, Math.max(0, a.atS * 1000 - (performance.now() - t0)));
    })));
    const wall = (Math.max(...recs.map((r) => r.endMs)) - Math.min(...recs.map((r) => r.sentMs))) / 1000;
    const outTokens = recs.reduce((a, r) => a + r.outputTokens, 0);
    const byKind = (k: Arrival['kind']) => summarizeClass(recs.filter((r) => arrivals[r.index]!.kind === k));
    const result = { machine: mach, options: { ...o, root: path.relative(ROOT, o.root) || '.' }, wallS: wall, outputTps: outTokens / wall, short: byKind('short'), long: byKind('long') };
    const f = (d: Dist | null) => (d ? `${d.p50.toFixed(0)} / ${d.p99.toFixed(0)}` : '-');
    for (const k of ['short', 'long'] as const) {
      const c = result[k];
      console.log(`  ${k.padEnd(5)} n ${c.n} (errors ${c.errors})  TTFT p50/p99 ${f(c.ttftMs)} ms  longest token gap p50/p99 ${f(c.maxGapMs)} ms  TPOT p50/p99 ${f(c.tpotMs)} ms  e2e p50/p99 ${f(c.e2eMs)} ms`);
    }
    console.log(`  all: ${outTokens} output tokens in ${wall.toFixed(1)} s, ${result.outputTps.toFixed(1)} tok/s`);
    if (o.out) fs.writeFileSync(o.out, JSON.stringify(result, null, 1) + '\n');
    if (recs.some((r) => r.error)) throw new Error(`errors: ${[...new Set(recs.filter((r) => r.error).map((r) => r.error))].slice(0, 3).join('; ')}`);
  } finally {
    proc.kill('SIGTERM');
  }
}

await main();
