// Batch API benchmark: batch throughput through /v1/batches vs the engine's best 16/64-stream decode rate, and
// interactive TTFT p50 with and without a batch running (the batch lane's promise: TTFT barely moves).
// The throughput batch runs alone; the TTFT probes run during a second batch (probes are work too: their prefill
// would be counted against the batch's throughput otherwise).
//
// usage: node --import tsx bench/batch.ts [--shape 1b|small] [--threads N] [--lines N] [--prompt P] [--output D]
//          [--probes K] [--batch-width W] [--seed 1] [--quick] [--out FILE]
// --batch-width: the server's --batch-max-num-seqs (default: the server's own default, 4 × --max-num-seqs 64).
// --quick: the small shape and a few short lines: a pipeline check, not a measurement.

import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { CACHE_DIR } from './harness/build.js';
import { ensureGguf } from './gguf-gen.js';
import { SHAPES } from './shapes.js';
import { burst, streamCompletion, waitHealthy, type Target } from './serve-client.js';
import { burstPrompts, dist, steadyDecodeRate, type Dist } from './serve-trace.js';
import { KvCache } from '../src/model/kv-cache.js';
import { machineInfo, machineLine } from './machine.js';

const BENCH = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.dirname(BENCH);

interface Options { shape: string; threads: number; lines: number; prompt: number; output: number; probes: number; batchWidth: number; seed: number; quick: boolean; out: string | null }

function parseOptions(argv: string[]): Options {
  const o: Options = { shape: '1b', threads: os.cpus().length, lines: 512, prompt: 64, output: 128, probes: 12, batchWidth: 256, seed: 1, quick: false, out: null };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const v = () => { const x = argv[++i]; if (x === undefined) throw new Error(`${a} needs a value`); return x; };
    const int = () => { const x = Number(v()); if (!Number.isInteger(x) || x < 1) throw new Error(`${a} expects an integer >= 1`); return x; };
    switch (a) {
      case '--shape': o.shape = v(); break;
      case '--threads': o.threads = int(); break;
      case '--lines': o.lines = int(); break;
      case '--prompt': o.prompt = int(); break;
      case '--output': o.output = int(); break;
      case '--probes': o.probes = int(); break;
      case '--batch-width': o.batchWidth = int(); break;
      case '--seed': o.seed = int(); break;
      case '--quick': o.quick = true; break;
      case '--out': o.out = v(); break;
      default: throw new Error(`unknown option ${a}`);
    }
  }
  if (!(o.shape in SHAPES)) throw new Error(`--shape expects one of ${Object.keys(SHAPES).join(', ')}, got ${o.shape}`);
  if (o.quick) Object.assign(o, { shape: 'small', lines: 24, prompt: 16, output: 8, probes: 3, batchWidth: 128 });
  if (o.batchWidth < 64) throw new Error(`--batch-width expects >= 64 (the server's --max-num-seqs), got ${o.batchWidth}`);
  return o;
}

interface Floe { url: string; proc: ChildProcess; dataDir: string }

async function startFloe(model: string, o: Options, kvBytes: number): Promise<Floe> {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'floe-bench-batch-'));
  const args = [path.join(ROOT, 'bin/floe.js'), 'serve', '--model', model, '--port', '0', '--threads', String(o.threads), '--no-ui',
    '--max-num-seqs', '64', '--batch-max-num-seqs', String(o.batchWidth), '--kv-cache-memory', String(kvBytes), '--data-dir', dataDir];
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
  await waitHealthy(url, 600_000, () => (proc.exitCode !== null ? `floe serve exited:\n${out}` : null));
  return { url, proc, dataDir };
}

/** Interactive probes one after another: TTFT of each (ms). */
async function probeTtft(t: Target, prompts: readonly (readonly number[])[], until: () => boolean = () => false): Promise<number[]> {
  const ttft: number[] = [];
  for (const p of prompts) {
    if (until()) break;
    const rec = await streamCompletion(t, 0, p, 4, performance.now());
    if (rec.error) throw new Error(`interactive probe: ${rec.error}`);
    ttft.push(rec.firstTokenMs! - rec.sentMs);
  }
  return ttft;
}

async function api(url: string, pathName: string, init?: RequestInit): Promise<Record<string, unknown>> {
  const r = await fetch(url + pathName, init);
  const body = await r.json() as Record<string, unknown>;
  if (!r.ok) throw new Error(`${pathName}: HTTP ${r.status} ${JSON.stringify(body)}`);
  return body;
}

async function main(): Promise<void> {
  const o = parseOptions(process.argv.slice(2));
  const log = (s: string) => process.stderr.write(s + '\n');
  const machine = machineInfo();
  log(`machine: ${machineLine(machine)}`);
  const notes: string[] = [];
  const load = os.loadavg()[0]!;
  if (load > os.cpus().length * 0.5) notes.push(`load average ${load.toFixed(1)} on ${os.cpus().length} CPUs at start: other processes share the cores, timings are distorted`);
  if (o.quick) notes.push('--quick: a pipeline check on the small shape, not a measurement');
  const c = SHAPES[o.shape]!.config;
  const model = ensureGguf(CACHE_DIR, o.shape, c, 'q8_0', log);
  const kvBytes = Math.ceil(KvCache.bytesPerToken(c.numLayers, c.numKvHeads, c.headDim, 'bf16') * (o.prompt + o.output + 32) * (o.batchWidth + 2) * 1.25);
  log(`batch bench: ${o.shape} q8_0, ${o.threads} threads, ${o.lines} lines × (${o.prompt} prompt + ${o.output} output tokens), batch lane ${o.batchWidth} wide, ${o.probes} interactive probes`);
  const floe = await startFloe(model, o, kvBytes);
  const t: Target = { url: floe.url, model: path.basename(model).replace(/\.gguf$/, '') };
  try {
    // 1. the engine's best multi-stream decode rate (streams at once, each for o.output tokens)
    const decode: Record<string, number | null> = {};
    for (const streams of [16, 64]) {
      const recs = await burst(t, burstPrompts(streams, o.prompt, c.vocabSize, o.seed + streams), o.output);
      const bad = recs.find((r) => r.error);
      if (bad) throw new Error(`decode burst: ${bad.error}`);
      decode[streams] = steadyDecodeRate(recs)?.tps ?? null;
      log(`  ${streams} streams: ${decode[streams]?.toFixed(1) ?? 'n/a'} tok/s steady decode`);
    }
    const best = Math.max(...Object.values(decode).map((x) => x ?? 0));

    // 2. interactive TTFT alone
    const probes = burstPrompts(o.probes, o.prompt, c.vocabSize, o.seed + 7);
    await probeTtft(t, probes.slice(0, 1)); // warm-up
    const alone = dist(await probeTtft(t, probes));
    log(`  interactive TTFT alone: p50 ${alone?.p50.toFixed(1)} ms`);

    // 3. the batch alone (throughput), then a second batch with interactive probes while it runs (TTFT)
    const runBatch = async (lines: number, seed: number, probing: boolean) => {
      const prompts = burstPrompts(lines, o.prompt, c.vocabSize, seed);
      const jsonl = prompts.map((p, i) => JSON.stringify({
        custom_id: `b${i}`, method: 'POST', url: '/v1/completions',
        body: { model: t.model, prompt: p, max_tokens: o.output, temperature: 0, ignore_eos: true },
      })).join('\n');
      const form = new FormData();
      form.append('purpose', 'batch');
      form.append('file', new Blob([jsonl]), 'bench.jsonl');
      const file = await api(floe.url, '/v1/files', { method: 'POST', body: form });
      const t0 = performance.now();
      const created = await api(floe.url, '/v1/batches', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ input_file_id: file.id, endpoint: '/v1/completions', completion_window: '24h' }) });
      let batch = created;
      let finished = false;
      const poller = (async () => {
        while (!['completed', 'failed', 'cancelled', 'expired'].includes(batch.status as string)) {
          await new Promise((r) => setTimeout(r, 100));
          batch = await api(floe.url, `/v1/batches/${created.id}`);
        }
        finished = true;
      })();
      const during: number[] = [];
      if (probing) {
        // probes start once the batch fills the engine, and stop when it ends
        await new Promise((r) => setTimeout(r, 500));
        while (!finished && during.length < o.probes * 4) during.push(...await probeTtft(t, probes.slice(0, 1), () => finished));
      }
      await poller;
      const wallS = (performance.now() - t0) / 1000;
      if (batch.status !== 'completed') throw new Error(`batch ended ${batch.status}: ${JSON.stringify(batch.errors)}`);
      const out = await (await fetch(`${floe.url}/v1/files/${batch.output_file_id}/content`)).text();
      const generated = out.trim().split('\n').reduce((a, l) => a + (JSON.parse(l) as { response: { body: { usage: { completion_tokens: number } } } }).response.body.usage.completion_tokens, 0);
      if (generated !== lines * o.output) throw new Error(`batch generated ${generated} tokens, expected ${lines} × ${o.output}`);
      return { wallS, generated, during };
    };
    const alone1 = await runBatch(o.lines, o.seed + 100, false);
    const batchTps = alone1.generated / alone1.wallS;
    const wallS = alone1.wallS;
    const generated = alone1.generated;
    log(`  batch alone: ${generated} tokens in ${wallS.toFixed(1)} s = ${batchTps.toFixed(1)} tok/s (${(100 * batchTps / best).toFixed(0)} % of the best decode rate ${best.toFixed(1)})`);
    const probed = await runBatch(Math.max(o.batchWidth, Math.ceil(o.lines / 2)), o.seed + 200, true);
    const during = probed.during;
    const withBatch: Dist | null = dist(during);
    log(`  interactive TTFT during a batch: p50 ${withBatch?.p50.toFixed(1)} ms over ${during.length} probes (alone ${alone?.p50.toFixed(1)} ms); that batch ran at ${(probed.generated / probed.wallS).toFixed(1)} tok/s with the probes`);
    const result = {
      machine, shape: o.shape, threads: o.threads, lines: o.lines, prompt: o.prompt, output: o.output, batch_width: o.batchWidth, max_num_seqs: 64, quick: o.quick, notes,
      decode_tps: decode, best_decode_tps: best, batch_tps: batchTps, batch_wall_s: wallS, batch_generated_tokens: generated,
      batch_over_best_decode: batchTps / best, target: 0.9,
      ttft_ms_alone: alone, ttft_ms_during_batch: withBatch, probed_batch_tps: probed.generated / probed.wallS, probed_batch_lines: probed.generated / o.output,
    };
    for (const n of notes) log(`  note: ${n}`);
    const text = JSON.stringify(result, null, 2) + '\n';
    if (o.out) fs.writeFileSync(o.out, text);
    process.stdout.write(text);
  } finally {
    floe.proc.kill('SIGTERM');
    fs.rmSync(floe.dataDir, { recursive: true, force: true });
  }
}

main().catch((e: unknown) => { process.stderr.write(`batch bench: ${(e as Error).stack ?? e}\n`); process.exit(1); });
