// Child process: prefill + greedy decode timings of a GGUF through node-llama-cpp; prints one JSON line.
//
// usage: node --import tsx bench/run-nlc.ts <model.gguf> <prompt-file> <threads> <decode-steps>

import * as fs from 'node:fs';

// node-llama-cpp lives in bench/node_modules only (npm install --prefix bench): typed here by what we use,
// imported by a computed name so that the repository type-checks without it.
type Token = number & { __token?: never };
interface NlcSequence {
  evaluateWithoutGeneratingNewTokens(tokens: Token[]): Promise<void>;
  clearHistory(): Promise<void>;
  evaluate(tokens: Token[], opts: { temperature: number; yieldEogToken: boolean }): AsyncGenerator<Token, void, void>;
}
interface NlcContext { getSequence(): NlcSequence; readonly flashAttention: boolean | string; dispose(): Promise<void> }
interface NlcModel {
  createContext(o: { contextSize: number; batchSize: number; threads: { ideal: number; min: number }; flashAttention: 'auto' | boolean; sequences: number }): Promise<NlcContext>;
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

async function main(): Promise<void> {
  const [modelPath, promptFile, threadsArg, decodeArg] = process.argv.slice(2);
  if (!modelPath || !promptFile || !threadsArg || !decodeArg) throw new Error('usage: run-nlc.ts <model.gguf> <prompt-file> <threads> <decode-steps>');
  const threads = Number(threadsArg);
  const decode = Number(decodeArg);
  const prompt = fs.readFileSync(promptFile, 'utf8').trim().split(/\s+/).map(Number) as Token[];

  const { getLlama, LlamaLogLevel } = (await import(NLC_MODULE)) as Nlc;
  const t0 = performance.now();
  const llama = await getLlama({ gpu: false, build: 'never', usePrebuiltBinaries: true, skipDownload: true, maxThreads: 0, logLevel: LlamaLogLevel.error, progressLogs: false });
  const model = await llama.loadModel({ modelPath, gpuLayers: 0 });
  const context = await model.createContext({
    contextSize: prompt.length + decode + 64,
    batchSize: prompt.length,
    threads: { ideal: threads, min: threads },
    flashAttention: 'auto',
    sequences: 1,
  });
  const loadMs = performance.now() - t0;
  const seq = context.getSequence();

  // warm-up outside the timed region (page-in, thread start), then a fresh sequence state
  await seq.evaluateWithoutGeneratingNewTokens(prompt.slice(0, 16));
  await seq.clearHistory();

  const gen = seq.evaluate(prompt, { temperature: 0, yieldEogToken: true });
  const p0 = performance.now();
  const first = await gen.next();
  const prefillMs = performance.now() - p0;
  if (first.done) throw new Error('node-llama-cpp produced no token after the prompt');
  const tokens: number[] = [first.value];
  const d0 = performance.now();
  for (let i = 0; i < decode; i++) {
    const r = await gen.next();
    if (r.done) throw new Error(`node-llama-cpp stopped after ${i} decode steps`);
    tokens.push(r.value);
  }
  const decodeMs = performance.now() - d0;
  await gen.return();

  const out = {
    engine: 'node-llama-cpp',
    threads,
    prompt_tokens: prompt.length,
    decode_steps: decode,
    load_ms: loadMs,
    prefill_ms: prefillMs,
    decode_ms: decodeMs,
    prefill_tps: prompt.length / (prefillMs / 1000),
    decode_tps: decode > 0 ? decode / (decodeMs / 1000) : 0,
    tokens: tokens.slice(0, 16),
    flash_attention: context.flashAttention,
    build: { gpu: llama.gpu, cpuMathCores: llama.cpuMathCores, llamaCppRelease: llama.llamaCppRelease },
  };
  await context.dispose();
  await model.dispose();
  await llama.dispose();
  process.stdout.write(JSON.stringify(out) + '\n');
}

main().catch((e: unknown) => {
  process.stderr.write(`run-nlc: ${(e as Error).message}\n`);
  process.exit(1);
});
