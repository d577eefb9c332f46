// The native pool where the OS refuses a thread (a low `ulimit -u`, a container's pids limit): setThreads throws an
// error naming the thread, the pool keeps the size it had and still runs, and the process lives on (an uncaught
// std::system_error from the thread constructor ended it: terminate, exit 134). Root is not held to RLIMIT_NPROC, so
// the child runs as nobody with `ulimit -u 40` (setpriv); a user that is not root cannot switch, and the test skips.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { addonPath } from '../../src/backend/native-addon.js';

const built = addonPath();
const root = process.getuid?.() === 0;
const setpriv = spawnSync('setpriv', ['--version']).status === 0;
// a folder every user can read: the checkout may sit in a home folder that nobody cannot enter
const dir = mkdtempSync('/tmp/floe-pool-');
after(() => rmSync(dir, { recursive: true, force: true }));

const probe = (addon: string) => `
const a = require(${JSON.stringify(addon)});
const out = { before: a.getThreads() };
try { a.setThreads(200); out.threw = null; } catch (e) { out.threw = e.message; }
out.after = a.getThreads();
a.setThreads(2);
out.again = a.getThreads();
console.log(JSON.stringify(out));
`;

const skip = !existsSync(built) ? 'needs the native addon' : !root ? 'needs root (to run a child as nobody under ulimit -u)' : !setpriv ? 'needs setpriv (util-linux)' : false;

test('setThreads past what the OS gives throws naming the thread, and the pool keeps its size', { skip }, () => {
  chmodSync(dir, 0o755);
  const addon = join(dir, 'floe.node');
  copyFileSync(built, addon);
  chmodSync(addon, 0o755);
  const r = spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', '--', 'bash', '-c', 'ulimit -u 40 && exec "$0" -e "$1"', process.execPath, probe(addon)],
    { encoding: 'utf8', cwd: dir, env: { PATH: process.env.PATH ?? '/usr/bin:/bin' } });
  assert.equal(r.status, 0, `child ended with ${r.status} ${r.signal ?? ''}: ${r.stderr}`);
  const out = JSON.parse(r.stdout.trim().split('\n').pop()!) as { before: number; threw: string | null; after: number; again: number };
  assert.ok(out.threw, 'setThreads(200) under ulimit -u 40 did not throw');
  assert.match(out.threw, /^floe native setThreads\(200\): the OS refused worker thread \d+ of the 199 a pool of 200 threads needs: .*; the pool kept \d+ threads$/);
  assert.equal(out.after, out.before, 'the pool went back to the size it had');
  assert.equal(out.again, 2);
});
