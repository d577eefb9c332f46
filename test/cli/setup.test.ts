// The README's set-up commands on a fresh clone: the install script (the native build) runs once, not again through
// npx; .ci/run runs exactly those commands; `npm start` serves the built-in model.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { repoPath } from '../repo.js';

const ROOT = repoPath('');

/** The lines of the first ```sh block under "## Set up" in README.md. */
function readmeSetup(readme: string): string[] {
  const sec = readme.slice(readme.indexOf('## Set up'));
  const m = /```sh\n([\s\S]*?)```/.exec(sec);
  assert.ok(m, 'README has a ```sh block under ## Set up');
  return m[1]!.split('\n').filter((l) => l.trim());
}

test('.ci/run runs exactly the README set-up commands', () => {
  const readme = readmeSetup(readFileSync(join(ROOT, 'README.md'), 'utf8'));
  assert.equal(readme.length, 2);
  const ci = readFileSync(join(ROOT, '.ci/run'), 'utf8').split('\n')
    .filter((l) => l.trim() && !l.startsWith('#') && !/^(set |cd |node --version|npm --version|command -v )/.test(l));
  assert.deepEqual(ci, readme);
});

test('fresh clone: the README first command runs the install script once (npx would run it again)', { skip: !existsSync(join(ROOT, '.git')) && 'not a git checkout' }, () => {
  mkdirSync(join(ROOT, 'tmp'), { recursive: true }); // git-ignored, and on the same file system for hard links
  const work = mkdtempSync(join(ROOT, 'tmp', 'setup-'));
  try {
    const clone = join(work, 'floe');
    const head = execFileSync('git', ['-C', ROOT, 'rev-parse', 'HEAD'], { encoding: 'utf8' }).trim();
    execFileSync('git', ['clone', '-q', '--no-checkout', ROOT, clone]);
    execFileSync('git', ['-C', clone, 'checkout', '-q', head]);
    // What `npm install` would fetch and build, hard-linked in: the packages, the addon, the compiled TypeScript.
    for (const d of ['node_modules', 'build', 'dist']) if (existsSync(join(ROOT, d))) execFileSync('cp', ['-al', join(ROOT, d), join(clone, d)]);
    // npm rewrites its hidden lockfile in place: give the clone its own copy, not a link to the checkout's
    const hidden = join(clone, 'node_modules', '.package-lock.json');
    if (existsSync(hidden)) { const text = readFileSync(hidden); rmSync(hidden); writeFileSync(hidden, text); }
    // The install and prepare scripts only count their runs (a real rebuild takes minutes).
    const marker = join(work, 'scripts.log');
    const pkgPath = join(clone, 'package.json');
    const pkg = JSON.parse(readFileSync(pkgPath, 'utf8'));
    assert.equal(pkg.scripts.install, 'node-gyp rebuild --jobs max', 'the install script is the native build');
    for (const s of ['install', 'prepare']) pkg.scripts[s] = `node -e "require('fs').appendFileSync('${marker}', '${s}\\n')"`;
    writeFileSync(pkgPath, JSON.stringify(pkg, null, 2));
    const env = {
      ...process.env, npm_config_cache: join(work, 'npm-cache'), npm_config_offline: 'true', npm_config_audit: 'false',
      npm_config_fund: 'false', npm_config_update_notifier: 'false',
    };
    const runs = () => (existsSync(marker) ? readFileSync(marker, 'utf8').trim().split('\n') : []);

    const [first] = readmeSetup(readFileSync(join(clone, 'README.md'), 'utf8'));
    const r = spawnSync('sh', ['-c', first!], { cwd: clone, env, encoding: 'utf8', timeout: 180_000 });
    assert.equal(r.status, 0, r.stderr);
    assert.ok(r.stdout.trim().length > 20, `generated text: ${r.stdout}`);
    assert.match(r.stderr, /using the built-in model .*models\/floe-brown/);
    assert.deepEqual(runs().sort(), ['install', 'prepare'], 'install and prepare ran once each');

    // The check can fail: npx in a checkout links it into the npx cache and runs the install script again.
    const n = spawnSync('npx', ['floe', '--version'], { cwd: clone, env, encoding: 'utf8', timeout: 180_000 });
    assert.equal(n.status, 0, n.stderr);
    assert.equal(runs().filter((s) => s === 'install').length, 2, 'npx ran the install script a second time');
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
});

test('npm start serves the built-in model', async () => {
  const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8'));
  assert.doesNotMatch(pkg.scripts.start, /--model|--port/, 'npm start uses the defaults: built-in model, port 8000');
  const child = spawn('npm', ['start', '--', '--port', '0', '--threads', '1'], { cwd: ROOT, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (b) => { out += b; });
  child.stderr.on('data', (b) => { err += b; });
  try {
    const deadline = Date.now() + 60_000;
    let url: string | undefined;
    while (!url) {
      url = /listening on (http:\/\/\S+?)\s/.exec(out)?.[1];
      if (Date.now() > deadline || child.exitCode !== null) assert.fail(`no listening line; stdout: ${out} stderr: ${err}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    for (;;) {
      const h = await fetch(`${url}/health`).catch(() => null);
      if (h?.status === 200) break;
      if (Date.now() > deadline) assert.fail(`/health never answered 200; stderr: ${err}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    const models = (await (await fetch(`${url}/v1/models`)).json()) as { data: { id: string }[] };
    assert.deepEqual(models.data.map((m) => m.id), ['floe-brown']);
    assert.match(err, /no --model given, using the built-in model .*models\/floe-brown/);
  } finally {
    process.kill(-child.pid!, 'SIGTERM');
    await new Promise((r) => (child.exitCode !== null ? r(null) : child.once('exit', r)));
  }
});
