// floe synth --endpoint pointed at a URL that answers 200 with an HTML page (a proxy's login page, a web UI on that port),
// subprocess on the src CLI against a real HTTP server: exit 1 naming the request and what came back. Before: a bare
// JSON.parse error ("Unexpected token '<', \"<!DOCTYPE \"... is not valid JSON") that named neither the URL nor the request.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { repoPath } from '../repo.js';

const BIN = repoPath('bin/floe.js'); // the built CLI as users run it (npm test builds dist/ first; `npm run build` after a src change): it starts ~0.3 s sooner than src through tsx
const dir = mkdtempSync(join(tmpdir(), 'synth-endpoint-html-'));

test('an endpoint that answers HTML: exit 1 naming the request and the body', async () => {
  const page = createServer((_req, res) => { res.writeHead(200, { 'content-type': 'text/html' }); res.end('<!DOCTYPE html><html><body>Sign in</body></html>'); });
  await new Promise<void>((r) => page.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${(page.address() as { port: number }).port}`;
  try {
    const child = spawn(process.execPath, [BIN, 'synth', '--method', 'self-instruct', '--num', '1',
      '--endpoint', url, '--out', join(dir, 'x.jsonl')], { stdio: ['ignore', 'pipe', 'pipe'] });
    let err = '';
    child.stderr.on('data', (b) => { err += b; });
    const code = await new Promise<number | null>((r) => child.once('exit', r));
    assert.equal(code, 1, err);
    assert.match(err, new RegExp(`GET ${url.replace(/\./g, '\\.')}/v1/models: HTTP 200 but the body is not JSON: <!DOCTYPE html>`));
  } finally {
    page.close();
  }
});
