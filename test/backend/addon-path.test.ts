// FLOE_ADDON: the loader takes another build of the native addon from that path (A/B runs of two builds), and a path
// with no file is a clear error, not a silent fall back to the reference backend. Run in child processes: the addon
// loads once per process.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { addonPath } from '../../src/backend/native-addon.js';
import { repoPath } from '../repo.js';

const built = addonPath();
const skip = process.env.FLOE_ADDON ? 'FLOE_ADDON is set for this run' : !existsSync(built) ? 'needs the native addon' : false;
const dir = mkdtempSync(join(tmpdir(), 'floe-addon-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const probe = `
import { addonPath, loadAddon } from './src/backend/native-addon.js';
const a = loadAddon();
console.log(JSON.stringify({ path: addonPath(), isa: a ? a.isa() : null }));
`;
const root = repoPath('');
const child = (env: NodeJS.ProcessEnv) =>
  spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', probe], { cwd: root, env, encoding: 'utf8' });

describe('FLOE_ADDON', { skip }, () => {
  it('loads the build at that path', () => {
    const copy = join(dir, 'other.node');
    copyFileSync(built, copy);
    const r = child({ ...process.env, FLOE_ADDON: copy });
    assert.equal(r.status, 0, r.stderr);
    const out = JSON.parse(r.stdout.trim().split('\n').pop()!) as { path: string; isa: string | null };
    assert.equal(out.path, copy);
    assert.ok(out.isa, 'the copy loaded and answered');
  });

  it('a path with no file is an error that names it', () => {
    const missing = join(dir, 'missing.node');
    const r = child({ ...process.env, FLOE_ADDON: missing });
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, new RegExp(`FLOE_ADDON=${missing.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: no such file`));
  });

  it('unset, the addon comes from build/Release', () => {
    const env = { ...process.env };
    delete env.FLOE_ADDON;
    const r = child(env);
    assert.equal(r.status, 0, r.stderr);
    assert.equal((JSON.parse(r.stdout.trim().split('\n').pop()!) as { path: string }).path, built);
  });
});
