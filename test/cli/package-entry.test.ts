// The package entry as an installed user meets it: `import … from 'floe'` (package.json "exports") from a folder outside
// the checkout; the README's Library API example runs there as written.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { repoPath } from '../repo.js';

const ROOT = repoPath('');

/** A folder outside the checkout with floe installed as node_modules/floe (a link to this package). */
function userDir(): string {
  const entry = join(ROOT, JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).exports['.']);
  if (!existsSync(entry)) throw new Error(`${entry} is missing: run \`npm run build\` first (npm test does)`);
  const dir = mkdtempSync(join(tmpdir(), 'floe-user-'));
  mkdirSync(join(dir, 'node_modules'));
  symlinkSync(ROOT, join(dir, 'node_modules', 'floe'), 'dir');
  return dir;
}

function runIn(dir: string, file: string, code: string) {
  writeFileSync(join(dir, file), code);
  const r = spawnSync(process.execPath, [file], { cwd: dir, encoding: 'utf8', timeout: 120_000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

test("builtinModel() from 'floe' gives the shipped models' absolute paths, whatever the working directory", () => {
  const dir = userDir();
  const r = runIn(dir, 'paths.mjs', `import { builtinModel, BUILTIN_MODELS } from 'floe';
const paths = Object.fromEntries(BUILTIN_MODELS.map((n) => [n, builtinModel(n)]));
let unknown = null;
try { builtinModel('floe-nope'); } catch (e) { unknown = e.message; }
console.log(JSON.stringify({ default: builtinModel(), paths, unknown }));`);
  assert.equal(r.code, 0, r.err);
  const j = JSON.parse(r.out) as { default: string; paths: Record<string, string>; unknown: string | null };
  assert.equal(j.default, join(ROOT, 'models', 'floe-brown'));
  for (const name of ['floe-brown', 'floe-brown-draft', 'floe-brown-tools', 'floe-embed', 'floe-guard']) {
    assert.equal(j.paths[name], join(ROOT, 'models', name));
    assert.ok(existsSync(join(j.paths[name]!, name === 'floe-brown-tools' ? 'adapter_config.json' : 'config.json')), name);
  }
  assert.match(j.unknown ?? '', /'floe-nope' is not a built-in model; floe ships floe-brown, /);
});

test("README's Library API example runs outside the checkout", () => {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
  const section = readme.slice(readme.indexOf('## Library API'));
  const ts = /```ts\n([\s\S]*?)```/.exec(section)![1]!;
  const js = ts.replace(/(\w)!(?=[.)])/g, '$1'); // TypeScript's non-null assertions
  const r = runIn(userDir(), 'example.mjs', js);
  assert.equal(r.code, 0, r.err);
  assert.ok(r.out.trim().length > 0, 'the example prints the generated text');
});
