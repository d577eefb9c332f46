// Batched decode in-process: S concurrent streams through floe's engine (no HTTP) against llama.cpp called directly
// (bench/harness/llama_bench.cpp, --n-seq S) on the same GGUF, in one run, on the same host.
//
// usage: node --import tsx bench/decode-streams.ts [--shape 1b] [--format q8_0|fp8|bf16] [--streams 1,16] [--prompt 128]
//          [--decode 48] [--threads 2] [--amx tiles,off (off without AMX)] [--rounds 2] [--no-harness] [--harness BIN --backends DIR]
//          [--out FILE] [--speculative ngram|suffix [--num-speculative-tokens K]]
//
// floe: the KV cache is committed, S distinct random prompts of --prompt tokens are prefilled (outside the
// measurement), then every stream decodes greedily; the figure is tokens / wall time over --decode steps in which all
// S streams decode. Each AMX mode in
// --amx ('tiles': the int8 q8_0r16 tiles where the host has them; 'off': the AVX-512 VNNI kernels) is measured in the
// same process, the modes alternating for --rounds rounds (the best round counts), so both see the same host.
// --format picks floe's weights: a q8_0 or bf16 GGUF, or an fp8 (E4M3, row scales) safetensors directory, all random
// at the shape's sizes. llama.cpp: the prebuilt library node-llama-cpp ships, through the C++ harness on the q8_0 GGUF
// (llama.cpp has no fp8; bf16 runs on its own GGUF), distinct prompts, greedy, --decode tokens per stream; its
// decode_tps is the steady rate of its decode loop. --harness / --backends name a prebuilt
// harness and a directory of libggml-cpu-*.so variants (hosts without a compiler); otherwise bench/harness/build.ts
// builds it. Prints the host's CPU model and ISA flags, each figure, and the ratios the issue names.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { loadAddon, type AmxMode } from '../src/backend/native-addon.js';
import { nativeCounters } from '../src/backend/native.js';
import { Engine } from '../src/engine/engine.js';
import { KvCache } from '../src/model/kv-cache.js';
import { openModel } from '../src/model/open.js';
import { DEFAULT_SAMPLING } from '../src/model/sampler.js';
import { CACHE_DIR, runHarness } from './harness/build.js';
import { ensureFp8Dir } from './fp8-gen.js';
import { ensureGguf } from './gguf-gen.js';
import { machineInfo, machineLine } from './machine.js';
import { burstPrompts } from './serve-trace.js';
import { SHAPES } from './shapes.js';

type Format = 'q8_0' | 'fp8' | 'bf16';

interface Options {
  shape: string;
  format: Format;
  streams: number[];
  prompt: number;
  decode: number;
  threads: number;
  amx: AmxMode[];
  rounds: number;
  harness: boolean;
  harnessBin: string | null;
  backends: string | null;
  out: string | null;
  speculative: string | null; // 'ngram' | 'suffix': floe's engine speculates (llama.cpp does not)
  k: number;
}

function parseArgs(argv: string[]): Options {
  const o: Options = { shape: '1b', format: 'q8_0', streams: [1, 16], prompt: 128, decode: 48, threads: 2, amx: [], rounds: 2, harness: true, harnessBin: null, backends: null, out: null, speculative: null, k: 4 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!, v = (): string => {
      const s = argv[++i];
      if (s === undefined) throw new Error(`${a} needs a value`);
      return s;
    };
    const int = (min: number): number => {
      const s = v(), n = Number(s);
      if (!Number.isInteger(n) || n < min) throw new Error(`${a}: expected an integer >= ${min}, got '${s}'`);
      return n;
    };
    if (a === '--shape') o.shape = v();
    else if (a === '--format') {
      const f = v();
      if (f !== 'q8_0' && f !== 'fp8' && f !== 'bf16') throw new Error(`--format: q8_0, fp8 or bf16, got '${f}'`);
      o.format = f;
    }
    else if (a === '--streams') o.streams = v().split(',').map((s) => {
      const n = Number(s);
      if (!Number.isInteger(n) || n < 1) throw new Error(`--streams: expected positive integers, got '${s}'`);
      return n;
    });
    else if (a === '--prompt') o.prompt = int(1);
    else if (a === '--decode') o.decode = int(4);
    else if (a === '--threads') o.threads = int(1);
    else if (a === '--rounds') o.rounds = int(1);
    else if (a === '--speculative') {
      const sp = v();
      if (sp !== 'ngram' && sp !== 'suffix') throw new Error(`--speculative: ngram or suffix, got '${sp}'`);
      o.speculative = sp;
    } else if (a === '--num-speculative-tokens') o.k = int(1);
    else if (a === '--amx') o.amx = v().split(',').map((m) => {
      if (m !== 'tiles' && m !== 'off' && m !== 'emulate') throw new Error(`--amx: modes are tiles, off, emulate; got '${m}'`);
      return m;
    });
    else if (a === '--no-harness') o.harness = false;
    else if (a === '--harness') o.harnessBin = v();
    else if (a === '--backends') o.backends = v();
    else if (a === '--out') o.out = v();
    else throw new Error(`unknown option ${a}`);
  }
  if (!SHAPES[o.shape]) throw new Error(`--shape: one of ${Object.keys(SHAPES).join(', ')}, got '${o.shape}'`);
  return o;
}

const log = (s: string): void => { process.stderr.write(s + '\n'); };

async function harnessTools(o: Options): Promise<{ bin: string; backends: string } | null> {
  if (o.harnessBin && o.backends) return { bin: o.harnessBin, backends: o.backends };
  const { buildTools } = await import('./harness/build.js');
  const t = buildTools();
  for (const n of t.notes) log(n);
  return t.llamaBench ? { bin: t.llamaBench, backends: t.backendsDir } : null;
}

async function main(): Promise<void> {
  const o = parseArgs(process.argv.slice(2));
  const machine = machineInfo();
  log(`machine: ${machineLine(machine)}`);
  const addon = loadAddon();
  if (!addon) throw new Error('the native addon is not built (npm install)');
  log(`amx: ${JSON.stringify(addon.amx())}`);
  // default: both modes where the host has tiles, else the one it has ('tiles' would stop the run)
  if (o.amx.length === 0) o.amx = addon.amx().supported ? ['tiles', 'off'] : ['off'];
  const shape = SHAPES[o.shape]!;
  fs.mkdirSync(CACHE_DIR, { recursive: true });
  const file = o.format === 'fp8' ? ensureFp8Dir(CACHE_DIR, o.shape, shape.config, log) : ensureGguf(CACHE_DIR, o.shape, shape.config, o.format, log);
  const peerFile = o.format === 'fp8' ? ensureGguf(CACHE_DIR, o.shape, shape.config, 'q8_0', log) : file;
  const peerFormat = o.format === 'fp8' ? 'q8_0' : o.format;

  const { model: m, tokenizer } = await openModel(file, { threads: o.threads, backend: 'native', tokenizerOptional: true });
  const V = m.config.vocabSize, maxS = Math.max(...o.streams);
  const prompts = burstPrompts(maxS, o.prompt, V, 11);
  const floe: Record<string, Record<number, number[]>> = {};
  const paths: Record<string, Record<string, number>> = {};
  const startMode = addon.amx().mode;
  // tokens a stream may emit: the measured steps (k + 1 each with speculation) and the steps early streams take
  // while others prefill
  const outMax = (o.speculative ? o.decode * (o.k + 1) : o.decode) + 64;
  for (let round = 0; round < o.rounds; round++) {
    for (const mode of round % 2 === 0 ? o.amx : [...o.amx].reverse()) {
      addon.setAmx(mode);
      for (const S of o.streams) {
        const engine = new Engine(m, tokenizer, {
          maxNumSeqs: S,
          ...(o.speculative ? { speculative: o.speculative as 'ngram' | 'suffix', numSpeculativeTokens: o.k } : {}),
          kvCacheMemory: KvCache.bytesPerToken(m.config.numLayers, m.config.numKvHeads, m.config.headDim, 'f32') * (o.prompt + outMax + 16) * S,
        });
        // the KV cache's pages committed before anything is timed, as llama.cpp's buffers are when its context is made
        // (serve --kv-prefault does the same): a first write to each page costs ~20 µs on a VM
        for (const b of engine.runner.kv.buffers()) b.fill(0);
        prompts.slice(0, S).forEach((p, i) => engine.add({
          kind: 'generate', id: `r${i}`, promptIds: p, sampling: { ...DEFAULT_SAMPLING, temperature: 0, logitBias: null }, maxTokens: outMax, n: 1,
          stop: [], stopTokenIds: [], ignoreEos: true, logprobs: null, promptLogprobs: null, skipSpecialTokens: true,
        }));
        // prefill and each stream's first token outside the measurement
        const decoding = (): boolean => engine.scheduler.waiting.length === 0 && engine.scheduler.running.length === S &&
          engine.scheduler.running.every((q) => q.tokens.length > o.prompt);
        while (!decoding()) engine.step();
        const c0 = nativeCounters();
        const st0 = engine.stats();
        const g0 = st0.generatedTokens;
        const t0 = performance.now();
        for (let s = 0; s < o.decode; s++) engine.step();
        const ms = performance.now() - t0;
        const gen = engine.stats().generatedTokens - g0;
        // with speculation a step may emit several tokens a stream, never fewer than one
        if (o.speculative ? gen < S * o.decode : gen !== S * o.decode) throw new Error(`floe ${S} streams: ${gen} tokens in ${o.decode} steps, expected ${o.speculative ? 'at least ' : ''}${S * o.decode}`);
        const c1 = nativeCounters();
        paths[`${mode}/${S}`] = Object.fromEntries(Object.keys(c1).filter((k) => k.startsWith('matmul.path.') && (c1[k]! - (c0[k] ?? 0)) > 0).map((k) => [k.slice(12), c1[k]! - (c0[k] ?? 0)]));
        // the streams would decode on (maxTokens leaves room for the steps early streams took while others prefilled):
        // the engine is dropped here
        const tps = gen / (ms / 1000);
        ((floe[mode] ??= {})[S] ??= []).push(tps);
        const st1 = engine.stats();
        const spec = o.speculative ? `; drafts ${st1.specDraftTokens! - st0.specDraftTokens!}, kept ${st1.specAcceptedTokens! - st0.specAcceptedTokens!}` : '';
        log(`floe ${o.format} [AMX ${mode}] ${S} streams, round ${round + 1}: ${tps.toFixed(1)} tok/s (${(ms / o.decode).toFixed(1)} ms/step); matmul paths ${JSON.stringify(paths[`${mode}/${S}`])}${spec}`);
      }
    }
  }
  addon.setAmx(startMode);

  const llama: Record<number, number> = {};
  let harnessNote: string | null = null;
  if (o.harness) {
    const tools = await harnessTools(o);
    if (!tools) harnessNote = 'llama.cpp harness not available (npm run setup --prefix bench)';
    else {
      const pf = path.join(CACHE_DIR, `decode-streams-prompt-${o.shape}-${o.prompt}.txt`);
      fs.writeFileSync(pf, prompts[0]!.join(' ') + '\n');
      for (const S of o.streams) {
        const r = runHarness(tools.bin, tools.backends, peerFile, pf, o.threads, S, o.decode + 1, S > 1);
        llama[S] = r.decode_tps;
        log(`llama.cpp direct ${peerFormat} ${S} streams: ${r.decode_tps.toFixed(1)} tok/s`);
      }
    }
  }

  const best = (mode: string, S: number): number | null => {
    const v = floe[mode]?.[S];
    return v && v.length ? Math.max(...v) : null;
  };
  const lines: string[] = [];
  lines.push(`machine: ${machineLine(machine)}`);
  lines.push(`decode throughput, tok/s (${o.shape}, floe ${o.format}, llama.cpp ${peerFormat}, ${o.threads} threads, prompts ${o.prompt}, ${o.decode} steps; floe best of ${o.rounds} rounds)`);
  lines.push(`engine                 ${o.streams.map((S) => `${S} stream${S > 1 ? 's' : ''}`.padStart(11)).join(' ')}`);
  for (const mode of o.amx) lines.push(`floe [AMX ${mode}]`.padEnd(22) + ' ' + o.streams.map((S) => (best(mode, S)?.toFixed(1) ?? '-').padStart(11)).join(' '));
  if (Object.keys(llama).length) lines.push(`llama.cpp direct ${peerFormat}`.padEnd(22) + ' ' + o.streams.map((S) => (llama[S]?.toFixed(1) ?? '-').padStart(11)).join(' '));
  const ratios: Record<string, number> = {};
  const maxS1 = maxS, one = o.streams.includes(1) ? 1 : null;
  for (const mode of o.amx) {
    const f = best(mode, maxS1);
    if (f === null) continue;
    if (llama[maxS1]) ratios[`floe[${mode}]/llama.cpp at ${maxS1}`] = f / llama[maxS1]!;
    if (one !== null && best(mode, 1)) ratios[`floe[${mode}] ${maxS1}/1 streams`] = f / best(mode, 1)!;
  }
  if (o.amx.includes('tiles') && o.amx.includes('off') && best('off', maxS1)) ratios[`floe tiles/off at ${maxS1}`] = best('tiles', maxS1)! / best('off', maxS1)!;
  for (const [k, v] of Object.entries(ratios)) lines.push(`${k} = ${v.toFixed(2)}`);
  if (harnessNote) lines.push(harnessNote);
  process.stdout.write(lines.join('\n') + '\n');
  if (o.out) fs.writeFileSync(o.out, JSON.stringify({ machine, options: o, amx: addon.amx(), floe, paths, llama, ratios, note: harnessNote }, null, 1) + '\n');
}

main().catch((e: unknown) => {
  process.stderr.write(`decode-streams: ${(e as Error).stack ?? String(e)}\n`);
  process.exit(1);
});
