// A reader that closes floe's output early (`floe generate | head -1`): floe ends quietly, as SIGPIPE ends cat or seq.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { repoPath } from '../repo.js';

const BIN = repoPath('bin/floe.js');

/** Runs floe with its stdout's reading end closed before floe writes: exit status and stderr. */
function withClosedStdout(args: string[]): Promise<{ status: number | null; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'], timeout: 60_000 });
    child.stdout.destroy(); // the reader is gone before the child has started
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (d: string) => { stderr += d; });
    child.on('error', reject);
    child.on('close', (status) => resolve({ status, stderr }));
  });
}

// Before, each printed "node:events … Unhandled 'error' event … Error: write EPIPE" and its stack, exit 1.
test('stdout closed by its reader: exit 141 (128 + SIGPIPE), no stack trace', async () => {
  const model = repoPath('models/floe-brown');
  for (const args of [['--version'], ['tokenize', '--model', model, 'The old man'], ['generate', '--model', model, '--prompt', 'The', '--max-tokens', '4']]) {
    const r = await withClosedStdout(args);
    assert.equal(r.status, 141, `floe ${args.join(' ')}: exit ${r.status}: ${r.stderr}`);
    assert.doesNotMatch(r.stderr, /EPIPE|Unhandled|^\s+at /m, `floe ${args.join(' ')}`);
  }
});
