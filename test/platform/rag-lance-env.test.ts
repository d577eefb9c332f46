// Loading the RAG store sizes Lance's CPU pool to at least LANCE_MIN_CPU_THREADS (Lance's default pool on a 2-core host
// deadlocks its BM25 index merge in table.optimize(); bench/rag-lance-pool.ts reproduces it with LANCE_CPU_THREADS=1),
// and keeps a value the user set.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { cpus } from 'node:os';

const probe = (env: Record<string, string | undefined>) => {
  const e = { ...process.env, ...env };
  if (env.LANCE_CPU_THREADS === undefined) delete e.LANCE_CPU_THREADS;
  return execFileSync(process.execPath, ['--import', 'tsx', '-e',
    "import('./src/platform/rag/store.ts').then((m) => console.log(process.env.LANCE_CPU_THREADS, m.LANCE_MIN_CPU_THREADS))"], { env: e, encoding: 'utf8' }).trim();
};

test('the RAG store gives Lance a CPU pool of at least 4 threads unless LANCE_CPU_THREADS is set', () => {
  const [threads, min] = probe({ LANCE_CPU_THREADS: undefined }).split(' ').map(Number);
  assert.equal(min, 4);
  assert.equal(threads, Math.max(4, cpus().length));
  assert.equal(probe({ LANCE_CPU_THREADS: '7' }), '7 4');
});
