// `floe serve` as a subprocess on the built-in model, for the tests that kill and restart it (batch, fine-tuning jobs).

import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const BIN = fileURLToPath(new URL('../../bin/floe.js', import.meta.url));

export interface Floe { url: string; proc: ChildProcess; out: () => string; exit: Promise<number | null> }

/**
 * Start `floe serve --port 0 --threads 1 --data-dir DIR --no-ui ARGS` and resolve once the model is ready; the process
 * is pushed onto `procs` (the caller kills what is left). `built`: a dist/ file the run needs (npm test builds it).
 */
export function startFloeServe(dataDir: string, o: { built: string; procs: ChildProcess[]; args?: readonly string[]; env?: Record<string, string> }): Promise<Floe> {
  if (!existsSync(o.built)) throw new Error(`${o.built} is missing: run \`npm run build\` first (npm test does)`);
  const proc = spawn(process.execPath, [BIN, 'serve', '--port', '0', '--threads', '1', '--data-dir', dataDir, '--no-ui', ...(o.args ?? [])],
    { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...o.env } });
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
    void exit.then((code) => reject(new Error(`floe serve exited with ${code}:\n${out}`)));
  });
}
