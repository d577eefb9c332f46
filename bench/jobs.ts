// Fine-tuning jobs benchmark: interactive serving (TTFT p50/p99, single-stream decode tok/s) on the built-in model
// while idle and while a fine-tuning job trains in its niced child process (--jobs-threads), plus the job's step rate.
//
// usage: node --import tsx bench/jobs.ts [--threads N] [--jobs-threads N] [--probes K] [--prompt P] [--output D]
//          [--examples N] [--quick] [--out FILE]
// --quick: a few probes: a pipeline check, not a measurement.

import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { machineInfo, machineLine } from './machine.js';
import { streamCompletion, waitHealthy, type Target } from './serve-client.js';
import { burstPrompts, dist, singleStreamRate } from './serve-trace.js';

const ROOT = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const MODEL = 'floe-brown';
const VOCAB = 4096;

interface Options { threads: number; jobsThreads: number; probes: number; prompt: number; output: number; examples: number; quick: boolean; out: string | null }

function parseOptions(argv: string[]): Options {
  const half = Math.max(1, Math.floor(os.cpus().length / 2));
  const o: Options = { threads: half, jobsThreads: half, probes: 40, prompt: 64, output: 32, examples: 200, quick: false, out: null };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const v = () => { const x = argv[++i]; if (x === undefined) throw new Error(`${a} needs a value`); return x; };
    const int = () => { const x = Number(v()); if (!Number.isInteger(x) || x < 1) throw new Error(`${a} expects an integer >= 1`); return x; };
    switch (a) {
      case '--threads': o.threads = int(); break;
      case '--jobs-threads': o.jobsThreads = int(); break;
      case '--probes': o.probes = int(); break;
      case '--prompt': o.prompt = int(); break;
      case '--output': o.output = int(); break;
      case '--examples': o.examples = int(); break;
      case '--quick': o.quick = true; break;
      case '--out': o.out = v(); break;
      default: throw new Error(`unknown option ${a}`);
    }
  }
  if (o.quick) Object.assign(o, { probes: 4, output: 8, examples: 40 });
  return o;
}

async function startFloe(o: Options): Promise<{ url: string; proc: ChildProcess; dataDir: string }> {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'floe-bench-jobs-'));
  const args = [path.join(ROOT, 'bin/floe.js'), 'serve', '--port', '0', '--threads', String(o.threads), '--jobs-threads', String(o.jobsThreads), '--no-ui', '--data-dir', dataDir];
  const proc = spawn(process.execPath, args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  proc.stdout!.on('data', (d: Buffer) => { out += d.toString(); });
  proc.stderr!.on('data', (d: Buffer) => { out += d.toString(); });
  for (let i = 0; !/listening on (http:\/\/\S+)/.test(out); i++) {
    if (proc.exitCode !== null) throw new Error(`floe serve exited:\n${out}`);
    if (i > 600) throw new Error(`floe serve did not listen in 60 s:\n${out}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  const url = /listening on (http:\/\/\S+)/.exec(out)![1]!;
  await waitHealthy(url, 120_000, () => (proc.exitCode !== null ? `floe serve exited:\n${out}` : null));
  return { url, proc, dataDir };
}

async function api(url: string, pathName: string, init?: RequestInit): Promise<Record<string, unknown>> {
  const r = await fetch(url + pathName, init);
  const body = await r.json() as Record<string, unknown>;
  if (!r.ok) throw new Error(`${pathName}: HTTP ${r.status} ${JSON.stringify(body)}`);
  return body;
}

/** Probes one after another: TTFT (ms) and single-stream decode rate (tok/s) of each. */
async function probe(t: Target, prompts: readonly (readonly number[])[], output: number): Promise<{ ttft: number[]; tps: number[] }> {
  const ttft: number[] = [];
  const tps: number[] = [];
  for (const p of prompts) {
    const rec = await streamCompletion(t, 0, p, output, performance.now());
    if (rec.error) throw new Error(`probe: ${rec.error}`);
    ttft.push(rec.firstTokenMs! - rec.sentMs);
    const r = singleStreamRate(rec);
    if (r !== null) tps.push(r);
  }
  return { ttft, tps };
}

/** Training steps the job's events report: [step, unix seconds] of each. */
async function steps(url: string, id: string): Promise<Array<[number, number]>> {
  const ev = await api(url, `/v1/fine_tuning/jobs/${id}/events?limit=1000`);
  return (ev.data as Array<{ type: string; created_at: number; data: { step?: number; train_loss?: number } | null }>)
    .filter((e) => e.type === 'metrics' && e.data?.train_loss !== undefined).map((e) => [e.data!.step!, e.created_at]);
}

async function main(): Promise<void> {
  const o = parseOptions(process.argv.slice(2));
  const log = (s: string) => process.stderr.write(s + '\n');
  const machine = machineInfo();
  log(`machine: ${machineLine(machine)}`);
  const notes: string[] = [];
  const load = os.loadavg()[0]!;
  if (load > os.cpus().length * 0.5) notes.push(`load average ${load.toFixed(1)} on ${os.cpus().length} CPUs at start: other processes share the cores, timings are distorted`);
  if (o.quick) notes.push('--quick: a pipeline check, not a measurement');
  log(`jobs bench: ${MODEL}, serving ${o.threads} threads, trainer ${o.jobsThreads} threads (niced), ${o.probes} probes × (${o.prompt} prompt + ${o.output} output tokens)`);
  const floe = await startFloe(o);
  const t: Target = { url: floe.url, model: MODEL };
  try {
    const prompts = burstPrompts(o.probes, o.prompt, VOCAB, 11);
    await probe(t, prompts.slice(0, 2), o.output); // warm-up
    const idle = await probe(t, prompts, o.output);
    log(`  idle: TTFT p50 ${dist(idle.ttft)!.p50.toFixed(1)} ms p99 ${dist(idle.ttft)!.p99.toFixed(1)} ms, decode ${dist(idle.tps)?.p50.toFixed(1)} tok/s`);

    // a job long enough to outlast the probes (cancelled at the end)
    const words = ['the', 'river', 'old', 'man', 'said', 'city', 'house', 'was', 'in', 'a', 'long', 'night', 'came', 'from', 'we'];
    let s = 7;
    const rnd = () => { s = (Math.imul(s, 1103515245) + 12345) & 0x7fffffff; return s / 2 ** 31; };
    const sentence = (n: number) => Array.from({ length: n }, () => words[Math.floor(rnd() * words.length)]).join(' ');
    const jsonl = Array.from({ length: o.examples }, () => JSON.stringify({ messages: [{ role: 'user', content: sentence(12) }, { role: 'assistant', content: sentence(24) }] })).join('\n');
    const form = new FormData();
    form.append('purpose', 'fine-tune');
    form.append('file', new Blob([jsonl]), 'bench.jsonl');
    const file = await api(floe.url, '/v1/files', { method: 'POST', body: form });
    const job = await api(floe.url, '/v1/fine_tuning/jobs', {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: MODEL, training_file: file.id, hyperparameters: { batch_size: 4 }, floe: { max_steps: 100000, save_steps: 50 } }),
    });
    const id = job.id as string;
    while ((await steps(floe.url, id)).length === 0) {
      const j = await api(floe.url, `/v1/fine_tuning/jobs/${id}`);
      if (['failed', 'cancelled', 'succeeded'].includes(j.status as string)) throw new Error(`job ended ${j.status}: ${JSON.stringify(j.error)}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    const before = await steps(floe.url, id);
    const t0 = Date.now();
    const training = await probe(t, burstPrompts(o.probes, o.prompt, VOCAB, 12), o.output); // fresh prompts: no prefix-cache hits
    const wallS = (Date.now() - t0) / 1000;
    const after = await steps(floe.url, id);
    const stepRate = (after.length - before.length) / wallS;
    const started = (await api(floe.url, `/v1/fine_tuning/jobs/${id}/events?limit=1000`)).data as Array<{ message: string; created_at: number }>;
    const startedAt = started.find((e) => e.message === 'Fine-tuning job started')?.created_at ?? null;
    const overall = startedAt === null ? null : after.length / Math.max(1, Date.now() / 1000 - startedAt);
    await api(floe.url, `/v1/fine_tuning/jobs/${id}/cancel`, { method: 'POST' });
    log(`  training: TTFT p50 ${dist(training.ttft)!.p50.toFixed(1)} ms p99 ${dist(training.ttft)!.p99.toFixed(1)} ms, decode ${dist(training.tps)?.p50.toFixed(1)} tok/s; trainer ${stepRate.toFixed(2)} steps/s during the probes, ${overall?.toFixed(2)} since it started (batch 4)`);

    const result = {
      machine, model: MODEL, threads: o.threads, jobs_threads: o.jobsThreads, probes: o.probes, prompt: o.prompt, output: o.output, quick: o.quick, notes,
      idle: { ttft_ms: dist(idle.ttft), decode_tps: dist(idle.tps) },
      training: { ttft_ms: dist(training.ttft), decode_tps: dist(training.tps), trainer_steps_per_s: stepRate, trainer_steps_during_probes: after.length - before.length, trainer_steps_per_s_since_start: overall },
      ttft_p50_ratio: dist(training.ttft)!.p50 / dist(idle.ttft)!.p50,
      ttft_p99_ratio: dist(training.ttft)!.p99 / dist(idle.ttft)!.p99,
    };
    for (const n of notes) log(`  note: ${n}`);
    const text = JSON.stringify(result, null, 2) + '\n';
    if (o.out) fs.writeFileSync(o.out, text);
    process.stdout.write(text);
  } finally {
    floe.proc.kill('SIGTERM');
    await new Promise((r) => floe.proc.once('exit', r));
    fs.rmSync(floe.dataDir, { recursive: true, force: true });
  }
}

main().catch((e: unknown) => { process.stderr.write(`jobs bench: ${(e as Error).stack ?? e}\n`); process.exit(1); });
