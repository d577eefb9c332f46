// Loaded into every test process (package.json "test": --import): the run's first process makes one folder and points
// TMPDIR at it, so that os.tmpdir() in it, in the test files' processes and in the servers and CLIs they spawn is that
// folder; it is removed when the run ends. Without this each `npm test` left ~120 folders (~40 MB) of temporary
// models, stores and checkpoints in /tmp. A test file run on its own (node --test FILE) keeps the system's tmpdir.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

if (!process.env.FLOE_TEST_TMP) {
  const dir = mkdtempSync(join(tmpdir(), 'floe-test-'));
  process.env.FLOE_TEST_TMP = dir;
  process.env.TMPDIR = dir;
  process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
}
