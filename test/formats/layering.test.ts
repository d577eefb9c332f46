// ARCHITECTURE.md's layer rule, checked on every source file: a layer imports only from layers below it.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import ts from 'typescript';
import { repoPath } from '../repo.js';

const SRC = repoPath('src/');
// Bottom up, as in ARCHITECTURE.md ("Layers, bottom up").
const LAYERS = ['tensor', 'backend', 'formats', 'model', 'engine', 'train', 'parallel', 'platform', 'serve', 'cli'];

/** Layer violations of one file: every static, re-exported or dynamic import resolved against its folder. */
function violations(file: string, text: string): string[] {
  const from = relative(SRC, file).split('/')[0]!;
  const rank = LAYERS.indexOf(from);
  const out: string[] = [];
  for (const imp of ts.preProcessFile(text, true, true).importedFiles) {
    if (!imp.fileName.startsWith('.')) continue;
    const to = relative(SRC, resolve(dirname(file), imp.fileName)).split('/');
    if (to.length < 2 || to[0] === '..') { out.push(`${relative(SRC, file)} imports ${imp.fileName} (outside a layer folder)`); continue; }
    if (to[0] === from) continue;
    const r = LAYERS.indexOf(to[0]!);
    if (r < 0 || r >= rank) out.push(`${relative(SRC, file)} (layer ${from}) imports ${imp.fileName} (layer ${to[0]}, not below it)`);
  }
  return out;
}

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? sources(join(dir, e.name)) : e.name.endsWith('.ts') ? [join(dir, e.name)] : []));
}

test('the checker catches upward, sideways and dynamic imports', () => {
  const f = join(SRC, 'formats', 'x.ts');
  assert.equal(violations(f, "import type { LlamaConfig } from '../model/config.js';").length, 1);
  assert.equal(violations(f, "export { a } from '../engine/engine.js';").length, 1);
  assert.equal(violations(f, "const m = await import('../serve/server.js');").length, 1);
  assert.equal(violations(join(SRC, 'engine', 'x.ts'), "import { t } from '../train/trainer.js';").length, 1);
  assert.deepEqual(violations(f, "import { Tensor } from '../tensor/tensor.js'; import { a } from './gguf.js';"), []);
  assert.deepEqual(violations(join(SRC, 'cli', 'x.ts'), "import { s } from '../serve/server.js';"), []);
});

test('every src/ layer imports only from the layers below it', () => {
  const files = sources(SRC).filter((f) => dirname(f) !== SRC.replace(/\/$/, '')); // src/index.ts is the entry above all layers
  assert.ok(files.some((f) => f.includes('/formats/')) && files.some((f) => f.includes('/cli/')), 'found the layer folders');
  for (const f of files) assert.ok(LAYERS.includes(relative(SRC, f).split('/')[0]!), `${relative(SRC, f)} is in no known layer folder`);
  const bad = files.flatMap((f) => violations(f, readFileSync(f, 'utf8')));
  assert.deepEqual(bad, []);
});
