// floe synth reads its output, its progress log and a --seeds file line by line: an OUT past V8's longest string resumes,
// a progress line torn inside a character is cut off, and a seeds file's errors and recorded hash are the file's.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { appendFileSync, closeSync, mkdtempSync, openSync, readFileSync, rmSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DEFAULT_LIMITS } from '../../src/platform/synth/filters.js';
import type { Gen, SynthLlm } from '../../src/platform/synth/llm.js';
import { runSynth, type SynthOptions } from '../../src/platform/synth/pipeline.js';
import { PromptSet } from '../../src/platform/synth/prompts.js';
import { synth } from '../../src/platform/synth/synth.js';

const dir = mkdtempSync(join(tmpdir(), 'synth-lines-'));

/** A run of no units: only the output and its progress log are read and written. */
function opts(out: string): SynthOptions {
  return {
    method: 'self-instruct', units: [], llm: { name: 'none' } as unknown as SynthLlm, prompts: new PromptSet([]), out, format: 'messages',
    gen: { maxTokens: 8, temperature: 0.8, topP: 0.95 }, limits: DEFAULT_LIMITS, dedupThreshold: 0.7, window: 1, params: { seed: 1 },
  };
}

test('a progress log whose last line is torn inside a multi-byte character is cut back to its whole lines', async () => {
  const out = join(dir, 'torn.jsonl');
  await runSynth(opts(out));
  const log = `${out}.synth-progress`;
  const header = readFileSync(log);
  appendFileSync(log, Buffer.concat([Buffer.from('{"bytes":0,"units":{"é'), Buffer.from('€').subarray(0, 2)]));
  await runSynth(opts(out));
  assert.deepEqual(readFileSync(log), header);
});

test('an output of more than the longest string resumes (every committed line is read again for dedup)', async () => {
  const out = join(dir, 'big.jsonl');
  await runSynth(opts(out));
  // lines of ~1 MB (a sample, then JSON whitespace), 1_000_003 bytes so they straddle the reader's 16 MiB chunks
  const LINE = 1_000_003;
  const lines = Math.ceil(0x1fffffe8 / LINE) + 16;
  const block = Buffer.concat(Array.from({ length: 32 }, (_, i) => {
    const l = Buffer.alloc(LINE, 0x20);
    l.write(JSON.stringify({ prompt: `question ${i} é`, completion: 'answer', provenance: { id: `u${i}` } }));
    l[LINE - 1] = 0x0a;
    return l;
  }));
  const fd = openSync(out, 'w');
  try {
    for (let n = 0; n < lines; n += 32) writeSync(fd, block, 0, Math.min(32, lines - n) * LINE);
  } finally {
    closeSync(fd);
  }
  try {
    const bytes = lines * LINE;
    assert.ok(bytes > 0x1fffffe8);
    appendFileSync(`${out}.synth-progress`, JSON.stringify({ bytes, units: { u0: 'kept' } }) + '\n');
    const s = await runSynth(opts(out));
    assert.equal(s.kept, 1);
    assert.equal(statSync(out).size, bytes);
  } finally {
    rmSync(out, { force: true });
  }
});

/** Each chat answers one instruction that passes the filters. */
const llm: SynthLlm = {
  name: 'scripted',
  async chat(): Promise<Gen> { return { text: 'Explain how rivers carve canyons over millions of years.', finish: 'stop', promptTokens: 0, completionTokens: 8 }; },
  async complete(): Promise<Gen> { throw new Error('not used'); },
  openUserTurn: () => null,
};

test("a --seeds file: an error names its line; the run records the SHA-256 of the file's bytes", async () => {
  const bad = join(dir, 'bad-seeds.jsonl');
  writeFileSync(bad, '{"instruction":"Sum two numbers."}\n\n{"text":"x"}\n');
  await assert.rejects(synth({ method: 'evol-instruct', llm, seeds: bad, num: 1, out: join(dir, 'bad.jsonl') }), new RegExp(`^Error: ${bad}:3: expected "instruction"`));
  const blank = join(dir, 'blank-seeds.jsonl');
  writeFileSync(blank, '\n \n');
  await assert.rejects(synth({ method: 'evol-instruct', llm, seeds: blank, num: 1, out: join(dir, 'blank.jsonl') }), new RegExp(`^Error: ${blank}: no seed tasks`));

  const seeds = join(dir, 'seeds.jsonl');
  writeFileSync(seeds, '{"instruction":"Describe a river — briefly."}\r\n\r\n{"prompt":"Name three canyons 🏞."}');
  const out = join(dir, 'evol.jsonl');
  await synth({ method: 'evol-instruct', llm, seeds, num: 1, rounds: 1, out });
  const header = JSON.parse(readFileSync(`${out}.synth-progress`, 'utf8').split('\n')[0]!) as { inputs: Record<string, string> };
  assert.equal(header.inputs[`seeds ${seeds}`], createHash('sha256').update(readFileSync(seeds)).digest('hex').slice(0, 16));
});
