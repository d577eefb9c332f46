// The pieces of floe synth that need no model: chunker offsets, strict judge / guard parsing, text filters, prompt files, seeds.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadBrown } from '../../src/train/corpus.js';
import { DocumentChunker } from '../../src/platform/synth/chunk.js';
import { loadTokenizer } from '../../src/formats/tokenizer.js';
import { checkAnswer, checkText, DEFAULT_LIMITS, isCopy, parseGuardAnswer } from '../../src/platform/synth/filters.js';
import { parseScore } from '../../src/platform/synth/judge.js';
import { cleanInstruction, parseSeeds } from '../../src/platform/synth/methods.js';
import { PromptSet } from '../../src/platform/synth/prompts.js';
import { repoPath } from '../repo.js';

test('document chunker (the RAG chunker): passages are exact slices at their offsets, in order, within the token bound, covering every word', async () => {
  const tok = (await loadTokenizer(repoPath('models/floe-brown')))!;
  const count = (s: string) => tok.encode(s, { addSpecialTokens: false }).length;
  const docs = loadBrown().slice(0, 3);
  for (const [maxTokens, overlap] of [[40, 0], [120, 0], [120, 30]] as const) {
    const c = new DocumentChunker({ maxTokens, overlap, countTokens: count });
    for (const d of docs) {
      const text = d.paragraphs.map((p) => p.join(' ')).join('\n\n');
      const ps = c.chunk(d.id, text);
      assert.ok(ps.length > 1);
      let last = 0;
      let prevStart = -1;
      for (const p of ps) {
        assert.equal(text.slice(p.start, p.end), p.text);
        assert.equal(p.id, `${d.id}#${p.start}`);
        assert.equal(p.doc, d.id);
        assert.ok(p.start > prevStart, 'in order');
        if (overlap === 0) assert.ok(p.start >= last, 'no overlap without --chunk-overlap');
        assert.equal(text.slice(last, p.start).trim(), '', 'no gap between passages');
        assert.ok(count(p.text) <= maxTokens, `${count(p.text)} > ${maxTokens}`);
        prevStart = p.start;
        last = Math.max(last, p.end);
      }
      assert.equal(text.slice(last).trim(), '', 'text after the last passage');
      if (overlap > 0) assert.ok(ps.some((p, i) => i > 0 && p.start < ps[i - 1]!.end), 'some passages overlap');
    }
  }
});

test('document chunker ends passages at paragraph ends when they fit, and counts with the given counter', () => {
  const text = 'aaaa bbbb cccc dddd. eeee ffff gggg hhhh.\n\niiii jjjj';
  const chars = (s: string) => s.replace(/\s/g, '').length;
  const ps = new DocumentChunker({ maxTokens: 17, countTokens: chars }).chunk('d', text);
  for (const p of ps) assert.ok(chars(p.text) <= 17, p.text);
  assert.deepEqual(ps.map((p) => p.text), ['aaaa bbbb cccc dddd.', 'eeee ffff gggg hhhh.', 'iiii jjjj']);
  assert.deepEqual(new DocumentChunker({ maxTokens: 36, countTokens: chars }).chunk('d', text).map((p) => p.text), ['aaaa bbbb cccc dddd. eeee ffff gggg hhhh.', 'iiii jjjj']);
});

test('judge scores parse strictly: "Score: N" on the first line or nothing', () => {
  assert.equal(parseScore('Score: 4'), 4);
  assert.equal(parseScore('\n  Score: 5/5\nbecause it is good'), 5);
  for (const bad of ['score: 4', 'Score: 6', 'I would say Score: 4', 'Score: four', '4', '', 'Score: 3.5']) assert.equal(parseScore(bad), null, bad);
});

test('guard answers parse as Llama Guard writes them; anything else throws', () => {
  assert.deepEqual(parseGuardAnswer('safe'), { safe: true, categories: [] });
  assert.deepEqual(parseGuardAnswer('\nunsafe\nS1,S10\n'), { safe: false, categories: ['S1', 'S10'] });
  assert.throws(() => parseGuardAnswer('maybe'), /neither 'safe' nor 'unsafe'/);
});

test('text filters: length, language sanity, refusals, copies', () => {
  assert.deepEqual(checkText('Explain how rain forms over the sea.', DEFAULT_LIMITS, 'instruction'), { ok: true });
  assert.deepEqual(checkText('hi', DEFAULT_LIMITS, 'instruction'), { ok: false, reason: 'instruction_too_short' });
  assert.deepEqual(checkText('x'.repeat(5000), DEFAULT_LIMITS, 'response'), { ok: false, reason: 'response_too_long' });
  assert.deepEqual(checkText('12 + 34 = 46; 7 * 8 = 56 || {} [] ###', DEFAULT_LIMITS, 'response'), { ok: false, reason: 'response_not_language' });
  assert.deepEqual(checkText('zqx vrpt kklm wwop qqzr ttyv', DEFAULT_LIMITS, 'response'), { ok: false, reason: 'response_not_language' });
  assert.deepEqual(checkAnswer("I'm sorry, but I cannot help with that."), { ok: false, reason: 'refused' });
  assert.deepEqual(checkAnswer('There is not enough information to say.'), { ok: false, reason: 'unanswerable' });
  assert.deepEqual(checkAnswer('Rain forms when water vapour condenses.'), { ok: true });
  assert.ok(isCopy('Explain rain.', 'explain   RAIN'));
  assert.ok(!isCopy('Explain rain and snow in the Alps, with one example.', 'Explain rain.'));
  assert.equal(cleanInstruction('4. Instruction: "Write a haiku."'), 'Write a haiku.');
});

test('prompt files: --prompts overrides the shipped ones per file; a missing variable names the file', () => {
  const dir = mkdtempSync(join(tmpdir(), 'synth-prompts-'));
  mkdirSync(join(dir, 'evol-instruct'));
  writeFileSync(join(dir, 'evol-instruct', 'deepen.txt'), 'Make it harder: {{instruction}}\n');
  const p = new PromptSet([dir, repoPath('data/synth')]);
  assert.equal(p.fill('evol-instruct', 'deepen', { instruction: 'Add 2 and 3.' }), 'Make it harder: Add 2 and 3.');
  assert.match(p.fill('evol-instruct', 'broaden', { instruction: 'Add 2 and 3.' }), /Add 2 and 3\./); // shipped file
  assert.throws(() => p.fill('judge', 'rubric', { instruction: 'x' }), /judge\/rubric\.txt uses \{\{response\}\}/);
  assert.throws(() => p.text('magpie', 'nothing'), /no prompt file magpie\/nothing\.txt/);
});

test('seed tasks: instruction (+input), prompt or messages; errors name the line', () => {
  const s = parseSeeds('{"instruction":"Sum","input":"1 2"}\n\n{"prompt":"P"}\n{"messages":[{"role":"user","content":"U"},{"role":"assistant","content":"A"}]}\n', 'f.jsonl');
  assert.deepEqual(s.map((x) => x.instruction), ['Sum\n\n1 2', 'P', 'U']);
  assert.throws(() => parseSeeds('{"text":"x"}', 'f.jsonl'), /f\.jsonl:1: expected "instruction"/);
});
