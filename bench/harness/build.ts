// Builds the native bench tools with g++: the llama.cpp harness (against node-llama-cpp's prebuilt .so) and the bandwidth probe.

import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
export const BENCH_DIR = path.dirname(HERE);
export const CACHE_DIR = path.join(BENCH_DIR, '.cache');
const NLC = path.join(BENCH_DIR, 'node_modules', 'node-llama-cpp');
const NLC_BINS = path.join(BENCH_DIR, 'node_modules', '@node-llama-cpp', 'linux-x64', 'bins', 'linux-x64');

export interface Tools {
  readonly llamaBench: string | null; // null when node-llama-cpp is not installed
  readonly bandwidth: string;
  readonly backendsDir: string; // directory of the libggml-cpu-*.so variants
  readonly llamaRelease: string | null;
  readonly notes: string[];
}

function newer(out: string, inputs: readonly string[]): boolean {
  if (!fs.existsSync(out)) return false;
  const t = fs.statSync(out).mtimeMs;
  return inputs.every((i) => fs.statSync(i).mtimeMs <= t);
}

function gpp(args: readonly string[]): void {
  try {
    execFileSync('g++', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (e) {
    const err = e as { stderr?: Buffer };
    throw new Error(`g++ ${args.join(' ')} failed:\n${err.stderr?.toString() ?? String(e)}`);
  }
}

/** llama.h / ggml*.h from the llama.cpp git bundle shipped inside node-llama-cpp (same release as its binaries). */
function extractHeaders(): string {
  const bundle = path.join(NLC, 'llama', 'gitRelease.bundle');
  const dir = path.join(CACHE_DIR, 'llama.cpp-headers');
  const stamp = path.join(dir, '.stamp');
  if (newer(stamp, [bundle])) return dir;
  const git = path.join(CACHE_DIR, 'llama.cpp.git');
  fs.rmSync(git, { recursive: true, force: true });
  fs.rmSync(dir, { recursive: true, force: true });
  execFileSync('git', ['clone', '-q', '--bare', bundle, git], { stdio: ['ignore', 'ignore', 'pipe'] });
  fs.mkdirSync(dir, { recursive: true });
  const tar = execFileSync('git', ['--git-dir', git, 'archive', 'HEAD', 'include', 'ggml/include'], { maxBuffer: 1 << 28 });
  execFileSync('tar', ['-x', '-C', dir], { input: tar });
  fs.rmSync(git, { recursive: true, force: true });
  fs.writeFileSync(stamp, '');
  return dir;
}

export function buildTools(): Tools {
  fs.mkdirSync(CACHE_DIR, { recursive: true });
  const notes: string[] = [];
  const bwSrc = path.join(HERE, 'bandwidth.cpp');
  const bandwidth = path.join(CACHE_DIR, 'bandwidth');
  if (!newer(bandwidth, [bwSrc])) gpp(['-O3', '-march=native', '-std=c++17', '-pthread', '-o', bandwidth, bwSrc]);

  let llamaBench: string | null = null;
  let llamaRelease: string | null = null;
  const libllama = fs.existsSync(NLC_BINS) ? fs.readdirSync(NLC_BINS).find((f) => /^libllama(\.v[\d.]+)?\.so$/.test(f)) : undefined;
  const libggml = fs.existsSync(NLC_BINS) ? fs.readdirSync(NLC_BINS).find((f) => /^libggml(\.v[\d.]+)?\.so$/.test(f)) : undefined;
  if (!libllama || !libggml || !fs.existsSync(NLC)) {
    notes.push(`llama.cpp harness skipped: no prebuilt libllama in ${NLC_BINS}; run \`npm run setup --prefix bench\``);
  } else {
    const info = JSON.parse(fs.readFileSync(path.join(NLC, 'llama', 'llama.cpp.info.json'), 'utf8')) as { tag?: string };
    llamaRelease = info.tag ?? null;
    const inc = extractHeaders();
    const src = path.join(HERE, 'llama_bench.cpp');
    llamaBench = path.join(CACHE_DIR, 'llama_bench');
    if (!newer(llamaBench, [src, path.join(inc, '.stamp')])) {
      gpp([
        '-O2', '-std=c++17', '-o', llamaBench, src,
        '-I', path.join(inc, 'include'), '-I', path.join(inc, 'ggml', 'include'),
        '-L', NLC_BINS, `-l:${libllama}`, `-l:${libggml}`, '-l:libggml-base.so', `-Wl,-rpath,${NLC_BINS}`,
      ]);
    }
  }
  return { llamaBench, bandwidth, backendsDir: NLC_BINS, llamaRelease, notes };
}

/** One JSON result line of the llama.cpp harness (llama_bench.cpp), without its system_info. */
export interface HarnessRun { decode_tps: number; n_seq: number; decode_ms: number; prefill_ms: number; distinct_prefill_ms?: number; kv_unified?: boolean; [k: string]: unknown }

/**
 * Runs the harness: `nSeq` streams (distinct prompts: each its own rotation of the prompt file), greedy, `decode`
 * tokens each, from the repository root. `backends` (the folder of libggml-cpu-*.so) also goes on LD_LIBRARY_PATH,
 * for a prebuilt harness whose rpath does not exist on this host.
 */
export function runHarness(bin: string, backends: string, model: string, promptFile: string, threads: number, nSeq: number, decode: number,
                           distinct: boolean): HarnessRun {
  const args = ['--model', model, '--backends', backends, '--prompt-file', promptFile, '--threads', String(threads),
    '--decode', String(decode), '--n-seq', String(nSeq), ...(distinct ? ['--distinct-prompts'] : [])];
  const env = { ...process.env, LD_LIBRARY_PATH: [backends, process.env.LD_LIBRARY_PATH].filter(Boolean).join(':') };
  const r = spawnSync(bin, args, { cwd: path.dirname(BENCH_DIR), encoding: 'utf8', timeout: 900_000, env });
  if (r.error || r.status !== 0) {
    throw new Error(`llama.cpp harness --n-seq ${nSeq}: ${r.error?.message ?? `exit ${r.status ?? r.signal}`}: ${(r.stderr || '').trim().split('\n').slice(-4).join(' | ')}`);
  }
  const line = r.stdout.split('\n').find((l) => l.startsWith('{'));
  if (!line) throw new Error(`llama.cpp harness --n-seq ${nSeq} printed no JSON`);
  const j = JSON.parse(line) as HarnessRun;
  delete j.system_info;
  return j;
}
