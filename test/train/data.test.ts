// Training data: JSONL validation with line numbers, loss masks per shape, packing, truncation, seeded order.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ChatTemplate, loadChatTemplate } from '../../src/formats/chat-template.js';
import { loadTokenizer } from '../../src/formats/tokenizer.js';
import { DataLoader, encodeExample, loadSamples, packSamples, parseJsonl, splitValidation, type Sample } from '../../src/train/data.js';
import { FIXTURES } from './fixtures.js';

const TOK_DIR = join(FIXTURES, 'train', 'tokenizer');
const tok = (await loadTokenizer(TOK_DIR))!;
const template = await loadChatTemplate(TOK_DIR);
const tmp = mkdtempSync(join(tmpdir(), 'floe-data-'));

function file(name: string, lines: string[]): string {
  const p = join(tmp, name);
  writeFileSync(p, lines.join('\n') + '\n');
  return p;
}

describe('parseJsonl', () => {
  it('reads a file that starts with a UTF-8 byte order mark', () => {
    assert.deepEqual(parseJsonl('\uFEFF{"text": "a"}\n{"text": "b"}\n', 'x.jsonl').map((e) => e.line), [1, 2]);
  });
  const cases: [string, RegExp][] = [
    ['{"text": "ok"}\n\n{"text": 3}', /x\.jsonl:3: "text" must be a string, got number/],
    ['{"text": "ok"}\n{"prompt": "a"', /x\.jsonl:2: invalid JSON/],
    ['{"prompt": "a"}', /x\.jsonl:1: "prompt" without "completion"/],
    ['{"completion": "a"}', /x\.jsonl:1: "completion" without "prompt"/],
    ['{"foo": 1, "bar": 2}', /x\.jsonl:1: expected "text", "prompt"\+"completion" or "messages", got keys \[foo, bar\]/],
    ['[1,2]', /x\.jsonl:1: expected a JSON object .* got an array/],
    ['{"text":"a"}\n{"messages": []}', /x\.jsonl:2: "messages" must be a non-empty array/],
    ['{"messages": [{"role": "user", "content": "hi"}]}', /x\.jsonl:1: "messages" has no assistant message/],
    ['{"messages": [{"content": "hi"}]}', /x\.jsonl:1: messages\[0\] must be an object with a string "role"/],
    ['{"messages": [{"role": "assistant", "content": 5}]}', /x\.jsonl:1: messages\[0\]\.content must be a string/],
    ['\n\n', /x\.jsonl: no examples/],
    ['{"messages": [{"role": "assistant", "content": "x"}], "tools": {}}', /x\.jsonl:1: "tools" must be an array of tool definitions, got object/],
    ['{"messages": [{"role": "assistant", "content": null, "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": "{x"}}]}]}',
      /x\.jsonl:1: messages\[0\]\.tool_calls\[0\]\.function\.arguments: not valid JSON/],
    ['{"messages": [{"role": "assistant", "content": null, "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": "[1]"}}]}]}',
      /x\.jsonl:1: messages\[0\]\.tool_calls\[0\]\.function\.arguments: must encode a JSON object/],
    ['{"messages": [{"role": "assistant", "content": null, "tool_calls": [{"type": "function"}]}]}', /x\.jsonl:1: messages\[0\]\.tool_calls\[0\]: expected/],
  ];
  for (const [text, re] of cases) it(`rejects ${JSON.stringify(text).slice(0, 40)}`, () => assert.throws(() => parseJsonl(text, 'x.jsonl'), re));

  it('loadSamples fails on a bad line before tokenizing anything', () => {
    const p = file('bad.jsonl', ['{"text": "the cat"}', '{"text": "in"}', '{"txt": "x"}']);
    assert.throws(() => loadSamples(p, tok, template, { maxSeqLen: 64 }), /bad\.jsonl:3: expected "text"/);
  });
});

describe('encodeExample', () => {
  it('text: BOS text EOS, loss on every token', () => {
    const { tokens, mask } = encodeExample({ kind: 'text', text: 'the cat' }, tok, template, { maxSeqLen: 64 }, 'x');
    assert.deepEqual(tokens, [...tok.encode('the cat'), tok.eosIds[0]]);
    assert.equal(tokens[0], tok.bosId);
    assert.ok(mask.every((m) => m === 1));
  });

  it('prompt/completion: loss only on completion + EOS (configurable)', () => {
    const p = tok.encode('Q: hi');
    const c = tok.encode(' there', { addSpecialTokens: false });
    const { tokens, mask } = encodeExample({ kind: 'completion', prompt: 'Q: hi', completion: ' there' }, tok, template, { maxSeqLen: 64 }, 'x');
    assert.deepEqual(tokens, [...p, ...c, 2]);
    assert.deepEqual(mask, [...p.map(() => 0), ...c.map(() => 1), 1]);
    const all = encodeExample({ kind: 'completion', prompt: 'Q: hi', completion: ' there' }, tok, template, { maxSeqLen: 64, trainOnPrompt: true }, 'x');
    assert.ok(all.mask.every((m) => m === 1));
  });

  it('messages: loss only on assistant turns (content and the EOS the template writes)', () => {
    const messages = [{ role: 'user', content: 'hi' }, { role: 'assistant', content: 'yo' }, { role: 'user', content: 'and?' }, { role: 'assistant', content: 'ok then' }];
    const { tokens, mask } = encodeExample({ kind: 'chat', messages }, tok, template, { maxSeqLen: 64 }, 'x');
    const full = template!.render(messages, { bosToken: '<s>', eosToken: '</s>' });
    assert.equal(tok.decode(tokens), full);
    const learned = tok.decode(tokens.filter((_, i) => mask[i] === 1));
    assert.equal(learned, 'yo</s>ok then</s>');
  });

  it('messages + tools (OpenAI fine-tuning format): tools and calls go through the template, loss on the call and the answer', () => {
    const t = new ChatTemplate("{{ bos_token }}{% for t in tools %}[{{ t.function.name }}]{% endfor %}{% for m in messages %}<{{ m.role }}>"
      + "{% if m.tool_calls %}{% for c in m.tool_calls %}{{ c.function.name }}{{ c.function.arguments | tojson }}{% endfor %}{% else %}{{ m.content }}{% endif %}</s>{% endfor %}"
      + "{% if add_generation_prompt %}<assistant>{% endif %}");
    const line = JSON.stringify({
      tools: [{ type: 'function', function: { name: 'calc', parameters: { type: 'object' } } }],
      messages: [{ role: 'user', content: 'two and two' }, { role: 'assistant', content: null, tool_calls: [{ id: 'c1', type: 'function', function: { name: 'calc', arguments: '{"e": "2+2"}' } }] },
        { role: 'tool', tool_call_id: 'c1', content: '4' }, { role: 'assistant', content: 'four' }],
    });
    const [{ example }] = parseJsonl(line, 'x.jsonl');
    const { tokens, mask } = encodeExample(example!, tok, t, { maxSeqLen: 256 }, 'x');
    assert.equal(tok.decode(tokens), '<s>[calc]<user>two and two</s><assistant>calc{"e": "2+2"}</s><tool>4</s><assistant>four</s>');
    assert.equal(tok.decode(tokens.filter((_, i) => mask[i] === 1)), 'calc{"e": "2+2"}</s>four</s>');
  });

  it('messages through a template that does not render prefixes: refused (assistant turns cannot be located), learned whole with trainOnPrompt', () => {
    // the message count at the end: messages[0..k] never renders as a prefix of the whole conversation
    const t = new ChatTemplate('{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}[{{ messages|length }}]');
    const messages = [{ role: 'user', content: 'the cat' }, { role: 'assistant', content: 'sat on a mat' }, { role: 'user', content: 'and?' }, { role: 'assistant', content: 'ran' }];
    assert.throws(() => encodeExample({ kind: 'chat', messages }, tok, t, { maxSeqLen: 64 }, 'x.jsonl:1'),
      /x\.jsonl:1: the chat template does not render messages\[0\.\.1\] as a prefix of the whole conversation, so assistant tokens cannot be located \(use --train-on-prompt\)/);
    const { tokens, mask } = encodeExample({ kind: 'chat', messages }, tok, t, { maxSeqLen: 64, trainOnPrompt: true }, 'x.jsonl:1');
    assert.equal(tok.decode(tokens), t.render(messages, { bosToken: '<s>', eosToken: '</s>' }));
    assert.ok(tokens.length > 0 && mask.every((m) => m === 1), 'the loss is on every token');
  });

  it('messages without a template fail with the line', () => {
    const p = file('chat.jsonl', ['{"text": "a"}', '{"messages": [{"role": "assistant", "content": "x"}]}']);
    assert.throws(() => loadSamples(p, tok, null, { maxSeqLen: 64 }), /chat\.jsonl:2: "messages" needs a chat template/);
  });
});

describe('packing and batching', () => {
  const sample = (ids: number[], mask: number[], line = 1): Sample => ({ tokens: Int32Array.from(ids), mask: Uint8Array.from(mask), line });

  it('packSamples: targets shift within each sample, positions restart, masked tokens are not targets', () => {
    const b = packSamples([sample([1, 10, 11, 12], [0, 0, 1, 1]), sample([1, 20, 21], [0, 1, 1])]);
    assert.deepEqual(Array.from(b.tokens), [1, 10, 11, 12, 1, 20, 21]);
    assert.deepEqual(Array.from(b.targets), [-1, 11, 12, -1, 20, 21, -1]);
    assert.deepEqual(Array.from(b.positions), [0, 1, 2, 3, 0, 1, 2]);
    assert.deepEqual(Array.from(b.segStart), [0, 4, 7]);
  });

  it('truncates to max seq len and drops samples with nothing to learn', () => {
    const p = file('long.jsonl', ['{"text": "the cat in the hat and the dog"}', '{"prompt": "the cat in the hat", "completion": "x"}']);
    const r = loadSamples(p, tok, template, { maxSeqLen: 5 });
    assert.equal(r.samples.length, 1);
    assert.equal(r.samples[0]!.tokens.length, 5);
    assert.equal(r.truncated, 2);
    assert.equal(r.dropped, 1);
  });

  const many = Array.from({ length: 10 }, (_, i) => sample(Array.from({ length: 3 + (i % 4) }, (_, j) => 3 + i + j), Array(3 + (i % 4)).fill(1), i + 1));

  it('no-shuffle keeps file order; shuffle is a seeded permutation per epoch', () => {
    const firsts = (l: DataLoader, n: number) => Array.from({ length: n }, () => l.next().indices[0]!);
    assert.deepEqual(firsts(new DataLoader(many, { batchSize: 1, shuffle: false, seed: 1 }), 12), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]);
    const a = firsts(new DataLoader(many, { batchSize: 1, shuffle: true, seed: 7 }), 20);
    assert.deepEqual(a, firsts(new DataLoader(many, { batchSize: 1, shuffle: true, seed: 7 }), 20));
    assert.notDeepEqual(a, firsts(new DataLoader(many, { batchSize: 1, shuffle: true, seed: 8 }), 20));
    assert.deepEqual([...a.slice(0, 10)].sort((x, y) => x - y), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    assert.notDeepEqual(a.slice(0, 10), a.slice(10, 20), 'each epoch has its own order');
  });

  it('restore(position) continues the same sequence', () => {
    const l = new DataLoader(many, { batchSize: 3, shuffle: true, seed: 3 });
    for (let i = 0; i < 5; i++) l.next();
    const pos = l.position();
    const rest = Array.from({ length: 6 }, () => l.next().indices);
    const l2 = new DataLoader(many, { batchSize: 3, shuffle: true, seed: 3 });
    l2.restore(pos);
    assert.deepEqual(Array.from({ length: 6 }, () => l2.next().indices), rest);
  });

  it('batch tokens: packs samples while they fit, never splits one', () => {
    const l = new DataLoader(many, { batchTokens: 10, shuffle: false, seed: 0 });
    let seen = 0;
    for (let i = 0; i < l.microBatchesInEpoch(0); i++) {
      const { batch, indices } = l.next();
      assert.ok(batch.tokens.length <= 10 || indices.length === 1);
      seen += indices.length;
    }
    assert.equal(seen, many.length);
  });

  it('splitValidation holds out a seeded fraction', () => {
    const { train, eval: ev } = splitValidation(many, 0.2, 5);
    assert.equal(ev.length, 2);
    assert.equal(train.length, 8);
    assert.deepEqual(new Set([...train, ...ev]), new Set(many));
  });
});
