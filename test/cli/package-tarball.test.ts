// floe as an npm user gets it: the tarball `npm pack` makes (package.json "files"), unpacked into a project's
// node_modules away from the checkout, with no native build (npm install --ignore-scripts, or a host without g++).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, readdirSync, symlinkSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { repoPath } from '../repo.js';

const ROOT = repoPath('');
const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';

interface PackEntry { readonly path: string; readonly size: number }

/**
 * The tarball `npm pack` makes, in a folder of its own, and what npm says it holds (--json: its files and unpacked
 * size): packed once for both tests (a pack took ~4 s, and the file list had a --dry-run pack of its own).
 */
let packed: { work: string; tgz: string; pack: { files: PackEntry[]; unpackedSize: number } } | undefined;
function npmPack(): NonNullable<typeof packed> {
  if (!packed) {
    const work = mkdtempSync(join(tmpdir(), 'floe-pack-'));
    const out = execFileSync(npm, ['pack', '--json', '--ignore-scripts', '--pack-destination', work], { cwd: ROOT, encoding: 'utf8', maxBuffer: 64 << 20, stdio: ['ignore', 'pipe', 'ignore'] });
    const [pack] = JSON.parse(out) as [{ files: PackEntry[]; unpackedSize: number }];
    packed = { work, tgz: readdirSync(work).find((f) => f.endsWith('.tgz'))!, pack };
  }
  return packed;
}

test('npm pack ships what an installed floe runs on, and not the checkout (tests, benchmarks, fixtures, sources)', () => {
  const { pack } = npmPack();
  const files = new Set(pack.files.map((f) => f.path));
  for (const need of [
    'package.json', 'README.md', 'bin/floe.js', 'dist/src/index.js', 'dist/src/index.d.ts', 'dist/src/cli/main.js', 'dist/src/engine/worker.js',
    'binding.gyp', 'native/addon.cc', 'native/mpi/probe.sh', 'web/index.html', 'data/synth/seeds.jsonl',
    'models/floe-brown/config.json', 'models/floe-brown/tokenizer.json', 'models/floe-brown-draft/config.json', 'models/floe-embed/config.json',
    'models/floe-guard/config.json', 'models/floe-brown-tools/adapter_config.json',
  ]) assert.ok(files.has(need), `${need} is in the package`);
  const stray = [...files].filter((p) => /^(test|bench|scripts|src|dist\/(test|bench|scripts)|\.[^/]+)\//.test(p) || p.endsWith('.tsbuildinfo'));
  assert.deepEqual(stray.slice(0, 10), [], 'nothing of the checkout beyond the runtime');
  assert.ok(pack.unpackedSize < 90e6, `unpacked ${(pack.unpackedSize / 1e6).toFixed(1)} MB (the five models are ~72 MB)`);
});

test('the packed floe, unpacked outside the checkout without its addon or SQLite build: the README example runs on the reference backend, the server serves its console, backend native and a data dir say how to build them', () => {
  const { work, tgz } = npmPack();
  const project = join(work, 'project');
  const pkg = join(project, 'node_modules', 'floe');
  mkdirSync(pkg, { recursive: true });
  execFileSync('tar', ['-xzf', join(work, tgz), '-C', pkg, '--strip-components=1']);
  assert.equal(existsSync(join(pkg, 'build')), false, 'no addon in the package: it is built on install');
  // the dependencies as npm would install them beside it (the checkout's, linked)
  // (better-sqlite3 unbuilt, as --ignore-scripts leaves it: its JavaScript without build/)
  for (const dep of readdirSync(join(ROOT, 'node_modules'))) {
    if (dep === 'better-sqlite3') cpSync(join(ROOT, 'node_modules', dep), join(project, 'node_modules', dep), { recursive: true, filter: (src) => !src.includes(`${dep}/build`) && !src.includes(`${dep}/deps`) });
    else if (dep !== '.bin' && dep !== 'floe' && !dep.startsWith('.')) symlinkSync(join(ROOT, 'node_modules', dep), join(project, 'node_modules', dep), 'dir');
  }
  writeFileSync(join(project, 'package.json'), JSON.stringify({ name: 'user-project', type: 'module', private: true }));
  writeFileSync(join(project, 'main.js'), `
import { builtinModel, openModel, generate, TextStream, startServer, shippedPrompts } from 'floe';
const { model, tokenizer } = await openModel(builtinModel('floe-brown'), { threads: 2 });
const out = generate(model, tokenizer.encode('The old man'), { maxTokens: 8, sampling: { temperature: 0 }, text: new TextStream(tokenizer) });
let native = null;
try { await openModel(builtinModel(), { backend: 'native' }); } catch (e) { native = e.message; }
const srv = await startServer({ model: builtinModel(), port: 0, dataDir: null, log: () => {} });
await srv.ready;
const page = await fetch(srv.url + '/');
const vendor = await fetch(srv.url + '/ui/vendor/preact.mjs');
await srv.close(0);
let sqlite = null;
try { await (await startServer({ model: builtinModel(), port: 0, dataDir: 'floe-data', log: () => {} })).close(0); } catch (e) { sqlite = e.message; }
console.log(JSON.stringify({ sqlite, model: builtinModel(), backend: model.backend.name, text: out.text, n: out.outputIds.length, native, page: page.status, vendor: vendor.status, prompts: shippedPrompts() }));
`);
  const r = spawnSync(process.execPath, ['main.js'], { cwd: project, encoding: 'utf8', timeout: 120_000, env: { ...process.env, FLOE_ADDON: '' } });
  assert.equal(r.status, 0, r.stderr);
  const j = JSON.parse(r.stdout) as Record<string, string | number>;
  assert.equal(j.model, join(pkg, 'models', 'floe-brown'));
  assert.equal(j.backend, 'reference');
  assert.equal(j.n, 8);
  assert.ok(String(j.text).length > 0);
  assert.match(String(j.native), /^the native backend is not built \(no .*floe\/build\/Release\/floe\.node\): run `npm rebuild floe` in the project that installed floe/);
  assert.equal(j.page, 200);
  assert.equal(j.vendor, 200);
  assert.equal(j.prompts, join(pkg, 'data', 'synth'));
  assert.match(String(j.sqlite), /^the data dir \(floe-data: Files, Batch and fine-tuning jobs API\) needs better-sqlite3's native module, which does not load: Could not locate the bindings file\..*`npm rebuild better-sqlite3`.*dataDir: null; CLI --no-batch/);
});
