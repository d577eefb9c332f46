// Many CLI runs in one process: `run` of the built CLI (what bin/floe.js awaits for its exit code) on each argv in turn.
// For checks that are mostly Node's start-up (~0.5 s a process): usage errors, one per flag or per bad argument.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { repoPath } from '../repo.js';

const DIST_MAIN = repoPath('dist/src/cli/main.js'); // what bin/floe.js runs

export interface RunResult { readonly status: number | null; readonly stdout: string; readonly stderr: string }

/**
 * The status, stdout and stderr of each run, as a process of its own gives them (an uncaught error: status 1 and its
 * stack). A run that never returns (a flag accepted, a server started) is named when the process is killed at the
 * deadline; nothing forces the process to exit, so a handle left open fails the same way.
 */
export function runEach(argvs: readonly (readonly string[])[]): RunResult[] {
  const dir = mkdtempSync(join(tmpdir(), 'floe-run-each-'));
  const list = join(dir, 'argv.json');
  writeFileSync(list, JSON.stringify(argvs));
  // a file, not -e: the process's execArgv stays what bin/floe.js has (a server's workers are started with it)
  const script = join(dir, 'run-each.mjs');
  writeFileSync(script, `
    import { readFileSync, writeSync } from 'node:fs';
    const { run } = await import(${JSON.stringify(pathToFileURL(DIST_MAIN).href)});
    const [out, err] = [process.stdout.write, process.stderr.write];
    for (const argv of JSON.parse(readFileSync(process.argv[2], 'utf8'))) {
      writeSync(1, JSON.stringify({ start: argv }) + '\\n');
      let stdout = '', stderr = '';
      process.stdout.write = (s) => { stdout += s; return true; };
      process.stderr.write = (s) => { stderr += s; return true; };
      let status;
      try { status = await run(argv); } catch (e) { status = 1; stderr += e?.stack ?? String(e); }
      finally { process.stdout.write = out; process.stderr.write = err; }
      writeSync(1, JSON.stringify({ status, stdout, stderr }) + '\\n');
    }`);
  const r = spawnSync(process.execPath, [script, list],
    { encoding: 'utf8', timeout: 120_000, stdio: ['ignore', 'pipe', 'pipe'] });
  const lines = r.stdout.trim().split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as RunResult & { start?: string[] });
  const results = lines.filter((l) => !l.start);
  if (results.length !== argvs.length || r.status !== 0) {
    const last = lines.at(-1)?.start;
    assert.fail(`${results.length} of ${argvs.length} runs returned${last ? `; floe ${last.join(' ')} never did` : ''} (exit ${r.status}, ${r.error?.message ?? r.stderr})`);
  }
  return results;
}
