// Child process: the serving trace, a burst of S streams and one stream through node-llama-cpp (S sequences of one context).
//
// usage: node --import tsx bench/serve-nlc.ts <job.json> <out.json>
// job.json: { model, threads, sequences, batchSize, contextPerSeq, trace?, burst?: {prompts, decode}, single?: {prompt, decode} }
// Each request takes a free sequence (FIFO queue when all S are busy), clears it, evaluates its prompt and draws
// its tokens greedily (end-of-generation tokens kept, so every output has its set length). node-llama-cpp batches
// the pending evaluations of all sequences into one llama_decode per cycle.

import * as fs from 'node:fs';
import type { RequestRecord, TraceRequest } from './serve-trace.js';

// node-llama-cpp lives in bench/node_modules only: typed by what we use, imported by a computed name.
type Token = number & { __token?: never };
interface NlcSequence {
  clearHistory(): Promise<void>;
  evaluate(tokens: Token[], opts: { temperature: number; yieldEogToken: boolean }): AsyncGenerator<Token, void, void>;
}
interface NlcContext { getSequence(): NlcSequence; readonly flashAttention: boolean | string; dispose(): Promise<void> }
interface NlcModel {
  createContext(o: {
    contextSize: number; batchSize: number; threads: { ideal: number; min: number }; flashAttention: 'auto' | boolean; sequences: number;
  }): Promise<NlcContext>;
  dispose(): Promise<void>;
}
interface Nlc {
  getLlama(o: Record<string, unknown>): Promise<{
    loadModel(o: { modelPath: string; gpuLayers: number }): Promise<NlcModel>;
    readonly gpu: unknown; readonly cpuMathCores: number; readonly llamaCppRelease: unknown;
    dispose(): Promise<void>;
  }>;
  LlamaLogLevel: { error: unknown };
}
const NLC_MODULE = 'node-llama-cpp';

export interface NlcJob {
  readonly model: string;
  readonly threads: number;
  readonly sequences: number;
  readonly batchSize: number;
  readonly contextPerSeq: number;
  readonly trace?: readonly TraceRequest[];
  readonly burst?: { readonly prompts: readonly (readonly number[])[]; readonly decode: number };
  readonly single?: { readonly prompt: readonly number[]; readonly decode: number };
}

export interface NlcResult {
  readonly engine: 'node-llama-cpp';
  readonly loadMs: number;
  readonly trace?: RequestRecord[];
  readonly burst?: RequestRecord[];
  readonly single?: RequestRecord;
  readonly flashAttention: boolean | string;
  readonly build: Record<string, unknown>;
}

/** A pool of S sequences handed out first come, first served. */
class SequencePool {
  private readonly waiters: Array<(s: NlcSequence) => void> = [];
  constructor(private readonly free: NlcSequence[]) {}
  acquire(): Promise<NlcSequence> {
    const s = this.free.pop();
    return s ? Promise.resolve(s) : new Promise((r) => this.waiters.push(r));
  }
  release(s: NlcSequence): void {
    const w = this.waiters.shift();
    if (w) w(s); else this.free.push(s);
  }
}

async function runOne(pool: SequencePool, index: number, prompt: readonly number[], n: number, t0: number): Promise<RequestRecord> {
  const sentMs = performance.now() - t0;
  const tokenMs: number[] = [];
  let error: string | null = null;
  const seq = await pool.acquire();
  try {
    await seq.clearHistory();
    const gen = seq.evaluate([...prompt] as Token[], { temperature: 0, yieldEogToken: true });
    try {
      while (tokenMs.length < n) {
        const r = await gen.next();
        if (r.done) throw new Error(`node-llama-cpp stopped after ${tokenMs.length} of ${n} tokens`);
        tokenMs.push(performance.now() - t0);
      }
    } finally {
      await gen.return();
    }
  } catch (e) {
    error = (e as Error).message;
  } finally {
    pool.release(seq);
  }
  return { index, promptTokens: prompt.length, sentMs, firstTokenMs: tokenMs[0] ?? null, endMs: performance.now() - t0, outputTokens: tokenMs.length, tokenMs, error };
}

async function main(): Promise<void> {
  const [jobFile, outFile] = process.argv.slice(2);
  if (!jobFile || !outFile) throw new Error('usage: serve-nlc.ts <job.json> <out.json>');
  const job = JSON.parse(fs.readFileSync(jobFile, 'utf8')) as NlcJob;
  const { getLlama, LlamaLogLevel } = (await import(NLC_MODULE)) as Nlc;
  const t0 = performance.now();
  const llama = await getLlama({ gpu: false, build: 'never', usePrebuiltBinaries: true, skipDownload: true, maxThreads: 0, logLevel: LlamaLogLevel.error, progressLogs: false });
  const model = await llama.loadModel({ modelPath: job.model, gpuLayers: 0 });
  const context = await model.createContext({
    contextSize: job.contextPerSeq, batchSize: job.batchSize, threads: { ideal: job.threads, min: job.threads },
    flashAttention: 'auto', sequences: job.sequences,
  });
  const loadMs = performance.now() - t0;
  const pool = new SequencePool(Array.from({ length: job.sequences }, () => context.getSequence()));

  // warm-up: page the weights in, start the threads
  await runOne(pool, -1, job.single?.prompt.slice(0, 16) ?? [1, 2, 3, 4], 2, performance.now());

  const out: { -readonly [K in keyof NlcResult]: NlcResult[K] } = {
    engine: 'node-llama-cpp', loadMs, flashAttention: context.flashAttention,
    build: { gpu: llama.gpu, cpuMathCores: llama.cpuMathCores, llamaCppRelease: llama.llamaCppRelease },
  };
  if (job.single) {
    out.single = await runOne(pool, 0, job.single.prompt, job.single.decode, performance.now());
    process.stderr.write(`serve-nlc: single stream done\n`);
  }
  if (job.burst) {
    const b = job.burst;
    const s0 = performance.now();
    out.burst = await Promise.all(b.prompts.map((p, i) => runOne(pool, i, p, b.decode, s0)));
    process.stderr.write(`serve-nlc: burst of ${b.prompts.length} done\n`);
  }
  if (job.trace) {
    const trace = job.trace;
    const s0 = performance.now();
    out.trace = await Promise.all(trace.map((r) => new Promise<RequestRecord>((resolve) => {
      setTimeout(() => { void runOne(pool, r.index, r.prompt, r.outputTokens, s0).then(resolve); }, Math.max(0, r.arrivalS * 1000 - (performance.now() - s0)));
    })));
    process.stderr.write(`serve-nlc: trace of ${trace.length} done\n`);
  }
  fs.writeFileSync(outFile, JSON.stringify(out) + '\n');
  await context.dispose();
  await model.dispose();
  await llama.dispose();
}

main().catch((e: unknown) => {
  process.stderr.write(`serve-nlc: ${(e as Error).stack ?? String(e)}\n`);
  process.exit(1);
});
