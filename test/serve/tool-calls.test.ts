// Tool-call parsing and streaming: random chunkings of model text give the same calls as parsing it whole; text that is
// no call stays content.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cutToolCalls, parseToolCalls, ToolCallStream, type ToolDelta } from '../../src/serve/tool-calls.js';

const TOOLS = new Set(['get_weather', 'get_time']);

function rand(seed: number): () => number {
  let a = seed >>> 0;
  return () => { a = (a + 0x6d2b79f5) >>> 0; let t = a; t = Math.imul(t ^ (t >>> 15), t | 1); t ^= t + Math.imul(t ^ (t >>> 7), t | 61); return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32; };
}

/** Feed `text` in random pieces; reassemble content and calls from the deltas as the openai client does. */
function streamed(text: string, forced: boolean, r: () => number, maxCalls = Infinity) {
  const s = new ToolCallStream(TOOLS, forced, maxCalls);
  const deltas: ToolDelta[] = [];
  for (let i = 0; i < text.length;) {
    const n = 1 + Math.floor(r() * 7);
    deltas.push(...s.push(text.slice(i, i + n)));
    i += n;
  }
  const end = s.finish();
  deltas.push(...end.deltas);
  let content = '';
  const calls: { id: string; name: string; args: string }[] = [];
  for (const d of deltas) {
    if ('content' in d) { content += d.content; continue; }
    const tc = d.tool_calls[0];
    if (tc.id !== undefined) { assert.equal(tc.index, calls.length, 'a new call takes the next index'); calls.push({ id: tc.id, name: tc.function.name!, args: tc.function.arguments }); }
    else calls[tc.index]!.args += tc.function.arguments;
  }
  return { content, calls, isCalls: end.isCalls, pieces: deltas.length };
}

test('random chunkings of call text stream the same calls that parsing the whole text finds', () => {
  const r = rand(1);
  const texts = [
    '{"name": "get_weather", "parameters": {"city": "Paris", "unit": "c"}}',
    '{"name":"get_time","parameters":{"zone":"UTC"}}; {"name": "get_weather", "parameters": {"city": "a \\"b\\" {c}"}}',
    '<|python_tag|>{"name": "get_time", "parameters": {"zone": "x;y"}}',
    '  {"name": "get_weather", "arguments": {"city": "Oslo", "list": [1, {"a": []}]}}',
  ];
  for (const text of texts) {
    const parsed = parseToolCalls(text, TOOLS);
    assert.ok(parsed && parsed.content === null, text);
    const whole = parsed.calls;
    for (const forced of [true, false]) {
      for (let k = 0; k < 20; k++) {
        const s = streamed(text, forced, r);
        assert.equal(s.content, '', text);
        assert.ok(s.isCalls);
        assert.deepEqual(s.calls.map((c) => [c.name, JSON.parse(c.args)]), whole.map((c) => [c.function.name, JSON.parse(c.function.arguments)]), text);
        assert.ok(s.calls.every((c) => /^call_[0-9a-f]{24}$/.test(c.id)));
      }
    }
  }
});

test('text that is not a call to a known tool stays content (auto), whole and streamed', () => {
  const r = rand(2);
  for (const text of ['Hello there.', ' {not json', '{"foo": 1}', '{"name": "rm_rf", "parameters": {}}', '{"name": "get_time", "parameters": [1]}', '<|eot|>']) {
    assert.equal(parseToolCalls(text, TOOLS), null, text);
    for (let k = 0; k < 10; k++) {
      const s = streamed(text, false, r);
      assert.equal(s.isCalls, false, text);
      assert.equal(s.content, text);
      assert.deepEqual(s.calls, []);
    }
  }
});

test('text after complete calls comes out as content beside them, whole and streamed', () => {
  const r = rand(3);
  const text = '{"name": "get_time", "parameters": {"zone": "x"}} and more';
  const p = parseToolCalls(text, TOOLS)!;
  assert.deepEqual([p.calls.length, p.content], [1, 'and more']);
  for (const forced of [true, false]) {
    const s = streamed(text, forced, r);
    assert.deepEqual([s.calls.length, s.calls[0]!.args, s.content, s.isCalls], [1, '{"zone": "x"}', 'and more', true]);
  }
});

test("text after a call and its '; ' separator (more text, a call to no given tool) is the same content whole and streamed", () => {
  const r = rand(5);
  for (const text of ['{"name": "get_time", "parameters": {"zone": "x"}}; and more', '{"name": "get_time", "parameters": {}} ;\n{"name": "rm_rf", "parameters": {}}']) {
    const p = parseToolCalls(text, TOOLS)!;
    assert.equal(p.calls.length, 1, text);
    for (let k = 0; k < 10; k++) {
      const s = streamed(text, false, r);
      assert.deepEqual([s.calls.map((c) => c.args), s.content, s.isCalls], [p.calls.map((c) => c.function.arguments), p.content, true], text);
    }
  }
});

test('a whole text gives the arguments as streaming sends them, byte for byte; a cut call reads as streaming reads it', () => {
  const r = rand(4);
  for (const text of ['{"name": "get_weather", "parameters": {"city": "Z\\u00fcrich",  "n": 1.50}}', '{"name":"get_time","parameters":{ "zone" : "UTC" }}; {"name": "get_time", "parameters": {}}']) {
    const whole = parseToolCalls(text, TOOLS)!.calls.map((c) => c.function.arguments);
    for (const forced of [true, false]) assert.deepEqual(streamed(text, forced, r).calls.map((c) => c.args), whole, text);
  }
  const cut = '{"name": "get_weather", "parameters": {"city": "Pa';
  for (const forced of [true, false]) {
    const s = streamed(cut, forced, r);
    const c = cutToolCalls(cut, TOOLS, forced)!;
    assert.deepEqual([c.calls.map((x) => [x.function.name, x.function.arguments]), c.content], [s.calls.map((x) => [x.name, x.args]), null]);
    assert.match(c.calls[0]!.id, /^call_[0-9a-f]{24}$/);
  }
  assert.equal(cutToolCalls('{"foo": 1', TOOLS, false), null, 'no call: the text stays content');
});

test('parallel_tool_calls false (maxCalls 1): the first call only, whole, streamed and cut; later calls and text dropped', () => {
  const r = rand(7);
  const calls = ['{"name": "get_weather", "parameters": {"city": "Paris"}}', '{"name":"get_time","parameters":{"zone":"UTC"}}', '{"name": "get_weather", "parameters": {"city": "Oslo"}}'];
  for (let k = 0; k < 30; k++) {
    const n = 1 + Math.floor(r() * 3);
    const text = calls.slice(0, n).join(r() < 0.5 ? '; ' : '\n') + (r() < 0.5 ? ' and then some words' : '');
    const first = parseToolCalls(calls[0]!, TOOLS)!.calls[0]!;
    const whole = parseToolCalls(text, TOOLS, 1)!;
    assert.equal(whole.calls.length, 1, text);
    assert.equal(whole.content, null, text);
    assert.deepEqual([whole.calls[0]!.function.name, whole.calls[0]!.function.arguments], [first.function.name, first.function.arguments]);
    assert.deepEqual(cutToolCalls(text, TOOLS, false, 1)!.calls.map((c) => c.function.arguments), [first.function.arguments], text);
    for (const forced of [true, false]) {
      const s = streamed(text, forced, r, 1);
      assert.ok(s.isCalls, text);
      assert.equal(s.content, '', text);
      assert.deepEqual(s.calls.map((c) => [c.name, c.args]), [[first.function.name, first.function.arguments]], text);
    }
    if (n > 1) assert.equal(parseToolCalls(text, TOOLS)!.calls.length, n, 'without the cap every call comes back');
  }
});

test('keys after a call\'s arguments are ignored, whole and streamed alike: the same calls, the model\'s own arguments text, not cut', () => {
  const r = rand(9);
  for (const text of [
    '{"name": "get_time", "parameters": {"zone": "UTC"}, "reason": "asked {for} it"}',
    '{"name": "get_weather", "parameters": {"city": "Oslo"} , "x": [1, {"y": 2}]}; {"name": "get_time", "parameters": {}}',
    '{"name": "get_time", "parameters": {"zone": "a"}, "note": 1} and then text',
  ]) {
    const p = parseToolCalls(text, TOOLS)!;
    assert.ok(p, text);
    const own = [...text.matchAll(/"parameters": (\{[^{}]*\})/g)].map((m) => m[1]);
    assert.deepEqual(p.calls.map((c) => c.function.arguments), own, `whole: the arguments as written (${text})`);
    for (let k = 0; k < 10; k++) {
      for (const forced of [false, true]) {
        const s = streamed(text, forced, r);
        assert.deepEqual([s.calls.map((c) => [c.name, c.args]), s.content || null, s.isCalls], [p.calls.map((c) => [c.function.name, c.function.arguments]), p.content, true], `${text} (forced ${forced})`);
      }
    }
    const st = new ToolCallStream(TOOLS, false);
    st.push(text);
    assert.equal(st.finish().cut, false, 'a complete call is not cut');
  }
  // an extra key whose object does not close is a call cut short, as any unclosed call
  const cut = new ToolCallStream(TOOLS, false);
  cut.push('{"name": "get_time", "parameters": {"zone": "UTC"}, "reason": "unfini');
  assert.equal(cut.finish().cut, true);
});
