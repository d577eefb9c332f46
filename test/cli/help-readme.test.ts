// `floe serve --help` and `floe plan --help` against README's CLI section: every flag of one is in the other, and the
// defaults the code uses are stated in both.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ENGINE_DEFAULTS } from '../../src/engine/protocol.js';
import { DEFAULT_MAX_LORAS } from '../../src/engine/adapters.js';
import { DEFAULT_NUM_SPECULATIVE_TOKENS } from '../../src/model/speculation.js';
import { DEFAULT_NUM_PREDICTION_TOKENS } from '../../src/model/prediction.js';
import { PLAN_DEFAULTS } from '../../src/platform/plan.js';
import { DEFAULT_BODY_LIMIT } from '../../src/serve/app.js';
import { repoPath } from '../repo.js';

const ROOT = repoPath('');
const README = readFileSync(join(ROOT, 'README.md'), 'utf8');

/** `floe CMD --help`: usage lines and the options section. */
function help(cmd: string): string {
  const r = spawnSync(process.execPath, [join(ROOT, 'bin/floe.js'), cmd, '--help'], { encoding: 'utf8', timeout: 30_000 });
  assert.equal(r.status, 0, r.stderr);
  return r.stdout;
}

/** The README paragraph that starts with **cmd**: (up to the next blank line). */
function paragraph(cmd: string): string {
  const start = README.indexOf(`**${cmd}**: `);
  assert.ok(start >= 0, `README has a **${cmd}** paragraph`);
  const end = README.indexOf('\n\n', start);
  return README.slice(start, end < 0 ? undefined : end);
}

const flagsOf = (text: string) => new Set([...text.matchAll(/--([a-z][a-z0-9-]*)/g)].map((m) => m[1]!));
const at = (text: string, flag: string) => new RegExp(`--${flag}(?![a-z0-9-])`).exec(text)?.index ?? -1;

/** A flag's help entry: from the flag to the end of its line and the continuation lines under it. */
function helpEntry(h: string, flag: string): string {
  const i = at(h, flag);
  assert.ok(i >= 0, `--${flag} in the help`);
  const lines = h.slice(i).split('\n');
  const out = [lines[0]!];
  for (const l of lines.slice(1)) if (/^ {20,}\S/.test(l)) out.push(l); else break;
  return out.join('\n');
}

/** What the README says about a flag: from its first mention (in `para`, else anywhere) to the next flag in backquotes. */
function readmeEntry(para: string, flag: string): string {
  const text = at(para, flag) >= 0 ? para : README;
  const i = at(text, flag);
  assert.ok(i >= 0, `--${flag} in the README`);
  const next = text.indexOf('`--', i + flag.length + 2);
  return text.slice(i, next < 0 ? undefined : next);
}

const states = (entry: string, value: string) => new RegExp(`(^|[^\\d.])${value.replace(/[.]/g, '\\.')}([^\\d.]|$)`).test(entry);

for (const [cmd, defaults] of [
  ['serve', {
    host: '127.0.0.1', port: '8000', 'block-size': String(ENGINE_DEFAULTS.blockSize), 'max-batched-tokens': String(ENGINE_DEFAULTS.maxBatchedTokens),
    'max-num-seqs': String(ENGINE_DEFAULTS.maxNumSeqs), 'max-queue': String(ENGINE_DEFAULTS.maxQueue), 'max-body': `${DEFAULT_BODY_LIMIT / 2 ** 20}MiB`,
    'shutdown-grace': '30', 'num-speculative-tokens': String(DEFAULT_NUM_SPECULATIVE_TOKENS),
    'num-prediction-tokens': String(DEFAULT_NUM_PREDICTION_TOKENS), 'max-loras': String(DEFAULT_MAX_LORAS),
    'max-lora-rank': '64', 'jobs-threads': '1', 'guard-window': '64', 'swap-space': '4',
  }],
  ['plan', {
    concurrency: '1', 'max-batched-tokens': String(PLAN_DEFAULTS.maxBatchedTokens), devices: String(PLAN_DEFAULTS.devices), nodes: String(PLAN_DEFAULTS.nodes),
    'device-memory': '80GB', 'micro-batch': '1', 'seq-len': '2048', 'swap-space': '4',
  }],
] as const) {
  test(`floe ${cmd} --help and the README name the same flags with the same defaults`, () => {
    const h = help(cmd), para = paragraph(cmd);
    for (const f of flagsOf(h)) assert.ok(at(README, f) >= 0, `--${f} (floe ${cmd} --help) is not in the README`);
    for (const f of flagsOf(para)) assert.ok(at(h, f) >= 0, `--${f} (README's **${cmd}** paragraph) is not in floe ${cmd} --help`);
    for (const [flag, value] of Object.entries(defaults)) {
      assert.ok(states(helpEntry(h, flag), value), `floe ${cmd} --help: --${flag} does not state its default ${value}:\n${helpEntry(h, flag)}`);
      assert.ok(states(readmeEntry(para, flag), value), `README: --${flag} (${cmd}) does not state its default ${value}:\n${readmeEntry(para, flag)}`);
    }
  });
}
