// Pipeline parallelism on one host: 2 MPI ranks pinned to one core each vs one process with 2 threads, serving the
// same model — throughput at 1 and 16 streams, time to first token — and the hop cost of one micro-batch (µs, bytes).
//
//   node --import tsx bench/pipeline.ts [--model DIR|FILE.gguf | --shape 1b] [--tokens N] [--prompt-len P] [--streams 1,16] [--hop-only]
// --shape 1b: the Llama-3.2-1B bench shape as q8_0 GGUF (bench/.cache, generated once by bench/gguf-gen.ts); its
// activations cross as bf16 (f32 only for an f32 model), as the pipeline sends them.
// Needs Open MPI (mpirun) and the floe_mpi addon. Run alone: timings on a shared machine mean little.
// The hop runs twice: as built, and with FLOE_MPI_DEFAULT_SLACK=1 (the MPI thread's polls stretched by Linux's 50 µs
// default timer slack, as before the fix); the ratio of the two is printed.

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { outMessageBytes, stepMessageBytes } from '../src/parallel/pipeline.js';
import { machineLine } from './machine.js';
import { benchModel } from './pipeline-model.js';
import { burst, waitHealthy } from './serve-client.js';

const ROOT = join(import.meta.dirname, '..');
const BIN = join(ROOT, 'bin', 'floe.js');
const MPI_ENV = { ...process.env, OMPI_ALLOW_RUN_AS_ROOT: '1', OMPI_ALLOW_RUN_AS_ROOT_CONFIRM: '1' };

const { values } = parseArgs({
  options: {
    model: { type: 'string' }, shape: { type: 'string' }, tokens: { type: 'string', default: '64' },
    'prompt-len': { type: 'string', default: '32' }, streams: { type: 'string', default: '1,16' }, 'hop-rank': { type: 'boolean' },
    iters: { type: 'string', default: '200' }, 'hop-only': { type: 'boolean' },
  },
});

const INFO = await benchModel('bench/pipeline.ts', values.model, values.shape);
const MODEL = INFO.path;

if (values['hop-rank']) await hopRank();
else await main();

/** Under mpirun -np 2: ping-pong of STEP-sized messages down and OUT-sized ones back, as one decode micro-batch. */
async function hopRank(): Promise<void> {
  const { MpiTransport } = await import('../src/parallel/transport.js');
  const tr = await MpiTransport.init();
  const D = INFO.config.hiddenSize;
  const iters = Number(values.iters);
  const rows: object[] = [];
  for (const T of [1, 16, 256]) {
    const down = new Uint8Array(stepMessageBytes(T, T, T, 4, D, INFO.act));
    const back = new Uint8Array(outMessageBytes(T, D, INFO.act));
    const median: Record<string, number> = {};
    // pipelined: rank 0 posts the receive before its send completes, as PipelineDriver does; serial: each await in turn
    for (const pipelined of [true, false]) {
      const times: number[] = [];
      for (let i = 0; i < iters + 10; i++) {
        if (tr.rank === 0) {
          const t = performance.now();
          if (pipelined) { const got = tr.recv(1, 2); const sent = tr.send(1, 1, down); await got; await sent; } else { await tr.send(1, 1, down); await tr.recv(1, 2); }
          if (i >= 10) times.push(performance.now() - t);
        } else {
          await tr.recv(0, 1);
          await tr.send(0, 2, back);
        }
      }
      times.sort((a, b) => a - b);
      median[pipelined ? 'pipelined' : 'serial'] = Math.round(times[times.length >> 1]! * 1000);
    }
    if (tr.rank === 0) rows.push({ tokens: T, bytesDown: down.length, bytesBack: back.length, roundTripUsMedian: median.pipelined!, serialUsMedian: median.serial! });
  }
  if (tr.rank === 0) process.stdout.write(JSON.stringify(rows) + '\n');
  await tr.close();
}

async function serveRun(pipeline: boolean): Promise<{ streams: number; tokPerS: number; ttftMsMedian: number; errors: number }[]> {
  const serve = ['serve', '--model', MODEL, '--port', '0', '--no-ui', '--no-batch', '--kv-cache-memory', '256MiB', '--model-name', 'bench'];
  const proc: ChildProcess = pipeline
    ? spawn('mpirun', ['-np', '2', '--bind-to', 'core', '--map-by', 'core', process.execPath, BIN, ...serve, '--threads', '1', '--pipeline-parallel-size', '2'], { env: MPI_ENV })
    : spawn('taskset', ['-c', '0,1', process.execPath, BIN, ...serve, '--threads', '2']);
  let log = '';
  proc.stdout!.on('data', (d) => (log += d));
  proc.stderr!.on('data', (d) => (log += d));
  try {
    let url = '';
    for (let i = 0; !url; i++) {
      if (proc.exitCode !== null || i > 600) throw new Error(`server did not start:\n${log}`);
      url = /listening on (http:\S+)/.exec(log)?.[1] ?? '';
      await new Promise((r) => setTimeout(r, 100));
    }
    await waitHealthy(url, 120_000, () => (proc.exitCode === null ? null : `server exited:\n${log}`));
    const target = { url, model: 'bench' };
    const V = INFO.config.vocabSize;
    const P = Number(values['prompt-len']);
    const out = [];
    process.stderr.write(`${pipeline ? '2 ranks' : '1 process'}: ready at ${url}\n`);
    await burst(target, [[1, 2, 3]], 4); // warm-up
    for (const n of values.streams!.split(',').map(Number)) {
      const prompts = Array.from({ length: n }, (_, i) => Array.from({ length: P }, (_, j) => (i * 7919 + j * 104729) % (V - 10) + 5));
      const t = performance.now();
      const recs = await burst(target, prompts, Number(values.tokens));
      const bad = recs.find((r) => r.error !== null);
      if (bad) process.stderr.write(`${pipeline ? 'pipeline' : 'single'}, ${n} streams: ${bad.error}\n`);
      const wall = (performance.now() - t) / 1000;
      process.stderr.write(`${pipeline ? '2 ranks' : '1 process'}: ${n} streams in ${wall.toFixed(1)} s\n`);
      const ttft = recs.filter((r) => r.firstTokenMs !== null).map((r) => r.firstTokenMs! - r.sentMs).sort((a, b) => a - b);
      out.push({
        streams: n, tokPerS: Math.round(recs.reduce((a, r) => a + r.outputTokens, 0) / wall * 10) / 10,
        ttftMsMedian: Math.round(ttft[ttft.length >> 1] ?? NaN), errors: recs.filter((r) => r.error !== null).length,
      });
    }
    return out;
  } finally {
    proc.kill('SIGTERM');
    await new Promise((r) => (proc.exitCode !== null ? r(null) : proc.once('exit', r)));
  }
}

async function main(): Promise<void> {
  if (spawnSync('mpirun', ['--version']).status !== 0) throw new Error('mpirun not found: apt-get install openmpi-bin libopenmpi-dev');
  type Hop = { tokens: number; bytesDown: number; bytesBack: number; roundTripUsMedian: number; serialUsMedian: number };
  const hopRun = (defaultSlack: boolean): Hop[] => {
    const hop = spawnSync('mpirun', ['-np', '2', '--bind-to', 'core', '-x', 'FLOE_MPI_DEFAULT_SLACK', process.execPath, '--import', 'tsx', import.meta.filename, '--hop-rank', '--model', MODEL, '--iters', values.iters!],
      { encoding: 'utf8', env: { ...MPI_ENV, FLOE_MPI_DEFAULT_SLACK: defaultSlack ? '1' : '0' }, timeout: 300_000 });
    if (hop.status !== 0) throw new Error(`hop benchmark failed:\n${hop.stdout}${hop.stderr}`);
    return JSON.parse(hop.stdout.trim().split('\n').pop()!) as Hop[];
  };
  const hops = hopRun(false);
  const before = hopRun(true);
  process.stdout.write(`${machineLine()}\n`);
  printHops(hops, before);
  if (values['hop-only']) return;
  const single = await serveRun(false);
  const pp = await serveRun(true);
  const cfg = INFO.config;
  process.stdout.write(`model ${MODEL} (${INFO.weights}, ${cfg.numLayers} layers, D ${cfg.hiddenSize}), prompt ${values['prompt-len']} tokens, ${values.tokens} generated per stream\n\n`);
  process.stdout.write('streams | 1 process, 2 threads: tok/s  TTFT ms | 2 ranks × 1 core: tok/s  TTFT ms | ratio tok/s\n');
  for (let i = 0; i < single.length; i++) {
    const a = single[i]!, b = pp[i]!;
    process.stdout.write(`${String(a.streams).padStart(7)} | ${String(a.tokPerS).padStart(28)} ${String(a.ttftMsMedian).padStart(8)} | ` +
      `${String(b.tokPerS).padStart(24)} ${String(b.ttftMsMedian).padStart(8)} | ${(b.tokPerS / a.tokPerS).toFixed(2)}` +
      `${a.errors + b.errors ? `  (${a.errors + b.errors} errors)` : ''}\n`);
  }
}

function printHops(hops: readonly { tokens: number; bytesDown: number; bytesBack: number; roundTripUsMedian: number; serialUsMedian: number }[],
  before: readonly { roundTripUsMedian: number; serialUsMedian: number }[]): void {
  process.stdout.write(`\nhop (one micro-batch, rank 0 → 1 and back, ${INFO.act} activations, D ${INFO.config.hiddenSize}), round trip µs (median): ` +
    'pipelined (receive posted before the send completes, as the driver does) and serial; "default slack": the MPI thread with Linux\'s 50 µs timer slack (before the fix)\n');
  for (const [i, h] of hops.entries()) {
    const b = before[i]!;
    process.stdout.write(`  T=${h.tokens}: ${h.bytesDown} B down, ${h.bytesBack} B back: ${h.roundTripUsMedian} µs (serial ${h.serialUsMedian}); ` +
      `default slack ${b.roundTripUsMedian} µs (serial ${b.serialUsMedian}): ${(b.roundTripUsMedian / h.roundTripUsMedian).toFixed(2)}× faster\n`);
  }
  process.stdout.write('\n');
}
