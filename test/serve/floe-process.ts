// `floe serve` as a subprocess, for the tests that need a real server process: killed and restarted (batch, fine-tuning
// jobs), a CLI pointed at it (synth --endpoint), a browser on its console.

import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { after } from 'node:test';
import OpenAI from 'openai';
import { repoPath } from '../repo.js';

const BIN = repoPath('bin/floe.js');

export interface Floe { url: string; proc: ChildProcess; out: () => string; exit: Promise<number | null> }

/** The official openai client on `f` (no retries: a failed call shows at once). */
export const client = (f: Floe) => new OpenAI({ baseURL: f.url + '/v1', apiKey: 'unused', maxRetries: 0 });

/** A test file's list of started processes (startFloeServe's `procs`); an after() hook SIGKILLs those still running. */
export function serverProcs(): ChildProcess[] {
  const procs: ChildProcess[] = [];
  after(() => { for (const p of procs) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL'); });
  return procs;
}

/** How startFloeServe fails when the process exits before its model is ready (a usage error, a failed load). */
export class FloeExited extends Error {
  constructor(readonly code: number | null, readonly out: string) { super(`floe serve exited with ${code}:\n${out}`); }
}

export interface FloeServeOptions {
  /** A dist/ file the run needs (npm test builds it). */
  built: string;
  /** The process is pushed here; the caller kills what is left. */
  procs: ChildProcess[];
  args?: readonly string[];
  env?: Record<string, string>;
  /** Serve the web console (default: --no-ui). */
  ui?: boolean;
  /** The port to listen on (default 0: a free one), e.g. a restarted server's old port. */
  port?: number;
}

/**
 * Start `floe serve --port 0 --threads 1 --data-dir DIR --no-ui ARGS` (the built-in model unless ARGS name one;
 * `dataDir` null: --no-batch, no data dir) and resolve once the model is ready (/health answers 200 from then on);
 * rejects with FloeExited if the process ends first.
 */
export function startFloeServe(dataDir: string | null, o: FloeServeOptions): Promise<Floe> {
  if (!existsSync(o.built)) throw new Error(`${o.built} is missing: run \`npm run build\` first (npm test does)`);
  const proc = spawn(process.execPath, [BIN, 'serve', '--port', String(o.port ?? 0), '--threads', '1', ...(dataDir === null ? ['--no-batch'] : ['--data-dir', dataDir]),
    ...(o.ui ? [] : ['--no-ui']), ...(o.args ?? [])], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...o.env } });
  o.procs.push(proc);
  let out = '';
  const exit = new Promise<number | null>((r) => proc.once('exit', (code) => r(code)));
  return new Promise((resolve, reject) => {
    const onData = (d: Buffer) => {
      out += d.toString();
      const m = /listening on (http:\/\/\S+)/.exec(out);
      if (m && /model ready in/.test(out)) resolve({ url: m[1]!, proc, out: () => out, exit });
    };
    proc.stdout!.on('data', onData);
    proc.stderr!.on('data', onData);
    void exit.then((code) => reject(new FloeExited(code, out)));
  });
}
