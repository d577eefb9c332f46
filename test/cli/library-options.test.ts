// The library's entry points called from JavaScript with a misspelled option or a value of the wrong kind: a TypeError
// or RangeError naming the option (and the nearest known one), never a silent default, a wrong backend or a crash deep inside.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as floe from '../../src/index.js';
import { builtinModel, DEFAULT_SAMPLING, finetune, generate, openModel, startEngine, startServer, TextStream } from '../../src/index.js';
import { FINETUNE_FLAG_OPTIONS, withOptionNames } from '../../src/train/option-names.js';

const BROWN = builtinModel('floe-brown');
// JavaScript callers: the types below are what a JS user may pass, so the checks are reached past TypeScript
const loose = <T>(v: unknown) => v as T;

test('openModel: a backend name other than native / reference, threads that are not a count, and unknown options fail naming them', async () => {
  await assert.rejects(openModel(BROWN, loose({ backend: 'nativ' })), { name: 'TypeError', message: "backend must be 'native' or 'reference', got 'nativ' (a string)" });
  await assert.rejects(openModel(BROWN, loose({ backend: 'reference', threads: 'two' })), { name: 'RangeError', message: "threads must be an integer from 1 to 1024, got 'two' (a string)" });
  await assert.rejects(openModel(BROWN, { backend: 'reference', threads: 0 }), { name: 'RangeError', message: 'threads must be an integer from 1 to 1024, got 0' });
  await assert.rejects(openModel(BROWN, { backend: 'reference', threads: 1025 }), { name: 'RangeError', message: 'threads must be an integer from 1 to 1024, got 1025' });
  await assert.rejects(openModel(BROWN, loose({ thread: 2 })), { name: 'TypeError', message: /^openModel: unknown option 'thread' \(did you mean 'threads'\?\); the options are backend, threads, load/ });
});

test('generate: missing or misspelled options, a string prompt and values of the wrong kind fail naming the option', async () => {
  const { model, tokenizer } = await openModel(BROWN, { backend: 'reference' });
  const ids = tokenizer!.encode('The old man');
  const bad = (opts: unknown, err: { name: string; message: string | RegExp }, prompt: unknown = ids) =>
    assert.throws(() => generate(model, loose(prompt), loose(opts)), err);
  bad(undefined, { name: 'TypeError', message: 'generate: options must be an object, got undefined' });
  bad({ max_tokens: 5 }, { name: 'TypeError', message: /^generate: unknown option 'max_tokens' \(did you mean 'maxTokens'\?\)/ });
  bad({ maxTokens: '5' }, { name: 'RangeError', message: "maxTokens must be an integer >= 0, got '5' (a string)" });
  bad({ maxTokens: 5, sampling: { temp: 0 } }, { name: 'TypeError', message: /^generate: sampling: unknown option 'temp' \(did you mean 'temperature'\?\)/ });
  bad({ maxTokens: 5, kvDtype: 'f17' }, { name: 'TypeError', message: "kvDtype must be one of f32, bf16, fp8_e4m3, got 'f17' (a string)" });
  bad({ maxTokens: 5, logprobs: 'yes' }, { name: 'RangeError', message: "logprobs must be an integer from 0 to the vocabulary size 4096, got 'yes' (a string)" });
  bad({ maxTokens: 5, stopTokenIds: 'x' }, { name: 'TypeError', message: "stopTokenIds must be an array of token ids, got 'x' (a string)" });
  bad({ maxTokens: 5, text: tokenizer }, { name: 'TypeError', message: 'text must be a TextSink such as new TextStream(tokenizer), got an object (Tokenizer)' });
  bad({ maxTokens: 5 }, { name: 'TypeError', message: "generate: promptIds must be an array of token ids, got 'The old man' (a string) (encode it first: tokenizer.encode(text))" }, 'The old man');
  // the README's call, for contrast, runs
  const out = generate(model, ids, { maxTokens: 4, sampling: { temperature: 0 }, text: new TextStream(tokenizer!) });
  assert.equal(out.outputIds.length, 4);
});

test('finetune: a misspelled option fails before any training (maxStep would have run a whole epoch), as do a misspelled LoRA key and a string lr', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'floe-lib-'));
  const data = join(dir, 'd.jsonl');
  writeFileSync(data, JSON.stringify({ text: 'The quick brown fox jumps over the lazy dog.' }) + '\n');
  const out = join(dir, 'out');
  await assert.rejects(finetune(loose({ model: BROWN, data, out, maxStep: 2 })), { name: 'TypeError', message: /^finetune: unknown option 'maxStep' \(did you mean 'maxSteps'\?\); the options are model, data, out,/ });
  await assert.rejects(finetune(loose({ model: BROWN, data, out, maxSteps: 1, lora: { rnak: 4 } })), { name: 'TypeError', message: /^finetune: lora: unknown option 'rnak' \(did you mean 'rank'\?\)/ });
  await assert.rejects(finetune(loose({ model: BROWN, data, out, maxSteps: 1, lr: '1e-3' })), { name: 'RangeError', message: "lr (the learning rate) must be a number > 0, got '1e-3' (a string)" });
  assert.equal(existsSync(out), false, 'nothing was written');
});

test('startServer: a misspelled option fails before it listens (prot would have served on 8000)', async () => {
  // a server that did start (the old behaviour: on port 8000, or 0 here) is closed, so that the failure is reported and nothing keeps running
  const got = await startServer(loose({ model: BROWN, port: 0, prot: 0, ui: false, dataDir: null, log: () => {} })).then(async (s) => { await s.close(0); return null; }, (e: Error) => e);
  assert.ok(got instanceof TypeError, 'startServer rejects');
  assert.match(got.message, /^startServer: unknown option 'prot' \(did you mean 'port'\?\)/);
});

test('startEngine: an unknown kvDtype or dtype fails naming it (it surfaced from the worker as a KV pool of NaN blocks)', async () => {
  // an engine that did start (the old behaviour for dtype) is shut down, so that the failure is reported and nothing keeps running
  const start = (o: object) => startEngine(loose({ model: BROWN, backend: 'reference', kvCacheMemory: 2 ** 20, ...o })).then(async (e) => { await e.shutdown(0); return null; }, (e: Error) => e);
  assert.deepEqual(await start({ kvDtype: 'f17' }), new TypeError("kvDtype must be one of f32, bf16, fp8_e4m3, got 'f17' (a string)"));
  assert.deepEqual(await start({ dtype: 'fp4' }), new TypeError("dtype must be 'fp8' or 'bf16' (convert the weights while loading) or absent, got 'fp4' (a string)"));
  // bf16 is accepted: the engine starts on the converted model
  assert.equal(await start({ dtype: 'bf16' }), null);
});

test('the errors a caller tells apart are exported: EngineRequestError (with its HTTP status) and RunSetupError', async () => {
  const { EngineRequestError, RunSetupError } = floe as unknown as Record<string, new (...a: never[]) => Error>;
  assert.equal(typeof EngineRequestError, 'function', 'EngineRequestError is exported');
  assert.equal(typeof RunSetupError, 'function', 'RunSetupError is exported');
  const engine = await startEngine({ model: BROWN, backend: 'reference', kvCacheMemory: 2 ** 20 });
  try {
    const run = async () => {
      for await (const _ of engine.generate({ id: 'x', promptIds: [1, 2], sampling: { ...DEFAULT_SAMPLING, logitBias: null }, maxTokens: 2, n: 1, stop: [], stopTokenIds: [], ignoreEos: false, logprobs: null, promptLogprobs: null, skipSpecialTokens: true, adapter: 'nope' }));
    };
    await assert.rejects(run(), (e: Error & { status?: number }) => e instanceof EngineRequestError! && e.status === 404 && /no LoRA adapter named 'nope'/.test(e.message));
  } finally {
    await engine.shutdown(0);
  }
  const dir = mkdtempSync(join(tmpdir(), 'floe-lib-'));
  const data = join(dir, 'd.jsonl');
  writeFileSync(data, JSON.stringify({ text: 'The quick brown fox jumps over the lazy dog.' }) + '\n');
  writeFileSync(join(dir, 'keep.txt'), 'an earlier file');
  await assert.rejects(finetune({ model: BROWN, data, out: dir, maxSteps: 1 }), (e: Error) => e instanceof RunSetupError! && /not empty/.test(e.message));
});

test('OptionNamedError (a plain finetune() / distill() refusal re-worded with option names) is exported: the class they throw, an Error and no RunSetupError', () => {
  const { OptionNamedError: Exported, RunSetupError } = floe as unknown as Record<string, new (...a: never[]) => Error>;
  assert.equal(typeof Exported, 'function', 'OptionNamedError is exported');
  // withOptionNames (what finetune() / distill() throw through) makes this class; test/train/option-names.test checks they do
  const named = withOptionNames(new Error('cannot read x; try --backend reference'), 'finetune', FINETUNE_FLAG_OPTIONS);
  assert.ok(named instanceof Exported!, String(named));
  assert.ok(named instanceof Error && !(named instanceof RunSetupError!));
});

test('startEngine / startServer: a missing model path or a count below one fails naming the option (maxNumSeqs -1 read as a negative KV cache memory)', async () => {
  const start = (o: object) => startEngine(loose({ model: BROWN, backend: 'reference', kvCacheMemory: 2 ** 20, ...o })).then(async (e) => { await e.shutdown(0); return null; }, (e: Error) => e);
  assert.deepEqual(await start({ maxNumSeqs: -1 }), new RangeError('maxNumSeqs must be an integer >= 1, got -1'));
  assert.deepEqual(await start({ blockSize: '16' }), new RangeError("blockSize must be an integer >= 1, got '16' (a string)"));
  assert.deepEqual(await start({ kvCacheMemory: -5 }), new RangeError('kvCacheMemory must be a number of bytes > 0, got -5'));
  assert.deepEqual(await start({ model: undefined }), new TypeError('model must be the path of an HF model directory or a .gguf file, got undefined'));
  const got = await startServer(loose({ port: 0, ui: false, dataDir: null, log: () => {} })).then(async (s) => { await s.close(0); return null; }, (e: Error) => e);
  assert.deepEqual(got, new TypeError('startServer: model must be the path of an HF model directory or a .gguf file, got undefined'));
});

test('Embedder: an unknown option, pooling or a count below one fails naming it, and embed() of one string says it takes an array', async () => {
  const EMBED = builtinModel('floe-embed');
  await assert.rejects(floe.Embedder.open(EMBED, loose({ poling: 'mean' })), { name: 'TypeError', message: /^Embedder\.open: unknown option 'poling' \(did you mean 'pooling'\?\)/ });
  await assert.rejects(floe.Embedder.open(EMBED, loose({ pooling: 'max' })), { name: 'TypeError', message: "pooling must be 'mean' or 'last', got 'max' (a string)" });
  await assert.rejects(floe.Embedder.open(EMBED, { maxTokens: -1 }), { name: 'RangeError', message: 'maxTokens must be an integer >= 1, got -1' });
  await assert.rejects(floe.Embedder.open(EMBED, { batchTokens: 0 }), { name: 'RangeError', message: 'batchTokens must be an integer >= 1, got 0' });
  const e = await floe.Embedder.open(EMBED, { backend: 'reference' });
  assert.throws(() => e.embed(loose('hello')), { name: 'TypeError', message: "embed takes an array of texts, got 'hello' (a string)" });
  assert.equal(e.embed(['hello']).length, 1);
  const r = await floe.openEmbedder(EMBED, { backend: 'reference', name: 'mine' }); // openEmbedder's own `name` is not the Embedder's
  assert.equal(r.name, 'mine');
});

test('guard.judge: a misspelled threshold fails naming it instead of judging at the default 0.5', async () => {
  const guard = await floe.Guard.open(builtinModel('floe-guard'), { backend: 'reference', kvCacheMemory: 2 ** 22 });
  try {
    await assert.rejects(guard.judge([{ role: 'user', content: 'How do I bake bread?' }], loose({ treshold: 0.9 })), { name: 'TypeError', message: /^guard\.judge: unknown option 'treshold' \(did you mean 'threshold'\?\)/ });
  } finally {
    await guard.close();
  }
});
