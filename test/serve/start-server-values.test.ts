// startServer refuses an engine option's bad value (as startEngine does) before it listens: before, it resolved,
// listened, and only its ready promise rejected, so a library user's server answered 503s forever.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startServer } from '../../src/serve/server.js';
import { repoPath } from '../repo.js';

const BROWN = repoPath('models/floe-brown');

test('startServer: maxNumSeqs 0, kvDtype f8, kvCacheMemory -1 and threads 1.5 throw naming the option, and nothing listens', async () => {
  const cases: Array<[Record<string, unknown>, RegExp]> = [
    [{ maxNumSeqs: 0 }, /^RangeError: maxNumSeqs must be an integer >= 1, got 0/],
    [{ kvDtype: 'f8' }, /^TypeError: kvDtype must be one of .*got 'f8'/],
    [{ kvCacheMemory: -1 }, /^RangeError: kvCacheMemory must be a number of bytes > 0, got -1/],
    [{ threads: 1.5 }, /^RangeError: threads must be an integer >= 1, got 1\.5/],
  ];
  for (const [bad, want] of cases) {
    const lines: string[] = [];
    let server: Awaited<ReturnType<typeof startServer>> | null = null;
    try {
      server = await startServer({ model: BROWN, port: 0, ui: false, dataDir: null, log: (l) => lines.push(l), ...bad });
    } catch (e) {
      assert.match(String(e), want, JSON.stringify(bad));
    } finally {
      if (server) { await server.close(0); assert.fail(`${JSON.stringify(bad)}: startServer resolved (listening) instead of throwing`); }
    }
    assert.ok(!lines.some((l) => /listening/.test(l)), `${JSON.stringify(bad)}: logged ${lines.join(' | ')}`);
  }
});
