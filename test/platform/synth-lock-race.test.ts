// floe synth's --out lock taken over from a killed run by several runs at once: exactly one may win. Before, each
// contender that read the dead pid removed "the stale lock" and linked its own, so a late one could remove the lock a
// faster one had just taken and both wrote the same --out. Eight long-lived contender processes start each round at
// the same instant against a lock left by a dead pid.

import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { fork, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { nodeScript } from '../repo.js';

const CHILD = nodeScript('test/platform/synth-lock-race-child.ts');
const kids: ChildProcess[] = [];
after(() => { for (const k of kids) k.kill('SIGKILL'); });

type Reply = { ready?: true; won?: boolean; message?: string; released?: true };
function next(k: ChildProcess, want: (r: Reply) => boolean): Promise<Reply> {
  return new Promise((ok, fail) => {
    const on = (r: Reply) => { if (want(r)) { k.off('message', on); k.off('exit', ex); ok(r); } };
    const ex = (code: number | null) => fail(new Error(`contender exited with ${code}`));
    k.on('message', on);
    k.once('exit', ex);
  });
}

test('a dead run\'s synth lock taken over by 8 runs at once: exactly one wins, every round', { timeout: 180_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'floe-synth-lock-race-'));
  const dead = spawnSync(process.execPath, ['-e', 'console.log(process.pid)'], { encoding: 'utf8' });
  const deadPid = Number(dead.stdout.trim());
  assert.ok(deadPid > 0);
  for (let i = 0; i < 8; i++) kids.push(fork(CHILD.at(-1)!, [], { execArgv: CHILD.slice(0, -1), stdio: ['ignore', 'ignore', 'inherit', 'ipc'] }));
  await Promise.all(kids.map((k) => next(k, (r) => !!r.ready)));
  for (let round = 0; round < 20; round++) {
    const out = join(dir, `r${round}.jsonl`);
    writeFileSync(`${out}.synth-lock`, `${deadPid}\n`); // as a killed run left it
    const go = Date.now() + 150;
    const results = kids.map((k) => next(k, (r) => r.won !== undefined));
    for (const k of kids) k.send({ go, out });
    const rs = await Promise.all(results);
    const winners = rs.filter((r) => r.won).length;
    assert.equal(winners, 1, `round ${round}: ${winners} runs hold the lock (${rs.map((r) => (r.won ? 'won' : r.message)).join(' | ')})`);
    for (const r of rs) if (!r.won) assert.match(r.message!, /is being written by another floe synth run \(pid \d+/);
    // the winner holds the lock until every contender has answered: a contender that a loaded host started late
    // still finds it held (a lock released after a fixed time let a late one take it as a second, later run)
    const winner = kids[rs.findIndex((r) => r.won)]!;
    const released = next(winner, (r) => !!r.released);
    winner.send('release');
    await released;
    assert.ok(!existsSync(`${out}.synth-lock`), `round ${round}: released`);
  }
  assert.deepEqual(readdirSync(dir).filter((n) => /takeover|synth-lock\./.test(n)), [], 'no marker or pid file is left');
  for (const k of kids) k.send('exit');
});
