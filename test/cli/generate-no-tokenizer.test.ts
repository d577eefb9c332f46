// `floe generate --prompt-ids` on an HF directory with no tokenizer files at all: it runs, and stderr says why the
// text is empty, as it does for a tokenizer floe cannot build (test/formats/gguf-unknown-tokenizer.test.ts).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { repoPath } from '../repo.js';

const ROOT = repoPath('');
const BROWN = join(ROOT, 'models/floe-brown');

test('generate --prompt-ids on a model without tokenizer files: a warning on stderr, the ids on --json', { timeout: 60_000 }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'floe-notok-'));
  try {
    for (const f of ['config.json', 'model.safetensors']) symlinkSync(join(BROWN, f), join(dir, f));
    const run = (json: boolean) => spawnSync(process.execPath, [join(ROOT, 'bin/floe.js'), 'generate', '--model', dir, '--prompt-ids', '4091,328',
      '--max-tokens', '3', '--temperature', '0', ...(json ? ['--json'] : [])], { encoding: 'utf8', timeout: 50_000 });
    for (const json of [false, true]) {
      const r = run(json);
      assert.equal(r.status, 0, r.stderr);
      assert.match(r.stderr, new RegExp(`warning: ${dir} has no tokenizer; generating without a tokenizer \\(no text: --json shows the ids\\)`));
      if (json) {
        const out = JSON.parse(r.stdout) as { prompt_ids: number[]; output_ids: number[]; text: string };
        assert.deepEqual(out.prompt_ids, [4091, 328]);
        assert.equal(out.output_ids.length, 3);
        assert.equal(out.text, '');
      }
    }
    // --prompt still needs a tokenizer: an error, no warning first
    const p = spawnSync(process.execPath, [join(ROOT, 'bin/floe.js'), 'generate', '--model', dir, '--prompt', 'x'], { encoding: 'utf8', timeout: 50_000 });
    assert.equal(p.status, 1);
    assert.match(p.stderr, /has no tokenizer: use --prompt-ids/);
    assert.doesNotMatch(p.stderr, /warning/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
