// A body the JSON parser refuses: Fastify said 'Body is not valid JSON but content-type is set to application/json'
// for broken JSON (no position) and for valid JSON holding a `__proto__` key, which it refuses against prototype
// poisoning (a JSON Schema may well name a property so). The 400 now says where the JSON breaks, or names the key.

import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { createApp } from '../../src/serve/app.js';
import { byteTokenizer, FakeEngine } from './helpers.js';

const tok = byteTokenizer();
const s = createApp({ modelName: 'tiny', ui: false });
s.ready({ engine: new FakeEngine(tok), tokenizer: tok, template: null });
after(() => s.app.close());
const post = (payload: string) => s.app.inject({ method: 'POST', url: '/v1/completions', headers: { 'content-type': 'application/json' }, payload });

test('broken JSON: a 400 invalid_json saying where it breaks', async () => {
  const r = await post('{"model": "tiny", "prompt": "a" "max_tokens": 2}');
  assert.equal(r.statusCode, 400, r.body);
  assert.equal(r.json().error.code, 'invalid_json');
  assert.match(r.json().error.message, /^the request body is not valid JSON: .*position 32/);
});

test('valid JSON with a __proto__ key (or constructor.prototype): a 400 naming the key, not "not valid JSON"', async () => {
  for (const body of [
    '{"model": "tiny", "prompt": "a", "guided_json": {"type": "object", "properties": {"__proto__": {"type": "string"}}}}',
    '{"model": "tiny", "prompt": "a", "constructor": {"prototype": {}}}',
  ]) {
    const r = await post(body);
    assert.equal(r.statusCode, 400, r.body);
    assert.equal(r.json().error.code, 'invalid_body');
    assert.match(r.json().error.message, /holds a '__proto__' key \(or 'constructor.prototype'\).*prototype poisoning/);
  }
  assert.equal((await post('{"model": "tiny", "prompt": "a", "max_tokens": 2}')).statusCode, 200);
});
