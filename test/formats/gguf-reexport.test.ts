// hfToGguf on a model loaded from a GGUF (re-typing a GGUF: q8_0 -> f16 / f32, or a GGUF read back and written
// again) keeps the source's tokenizer: every tokenizer.* key (vocabulary, merges or SentencePiece scores, token types,
// special ids and flags, chat template) as the source has it. Before, only an HF directory's tokenizer.json was
// embedded, so the GGUF came out with no tokenizer at all: llama.cpp refused to load it ("key not found in model:
// tokenizer.ggml.model") and floe read it back without a tokenizer. Checked on a byte-level BPE GGUF (floe-brown) and
// a SentencePiece one (the independent llama.cpp fixture), and, where node-llama-cpp is installed (bench/), loaded in
// llama.cpp with the same greedy tokens as floe on the same file.

import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadModel } from '../../src/formats/load.js';
import { readGguf } from '../../src/formats/gguf.js';
import { hfToGguf } from '../../src/formats/gguf-writer.js';
import { openModel } from '../../src/model/open.js';
import { generate } from '../../src/model/generate.js';
import { repoPath } from '../repo.js';

const BROWN = repoPath('models/floe-brown');
const SPM_GGUF = repoPath('test/fixtures/gguf-independent/tiny-llama.gguf');
const NLC = repoPath('bench/node_modules/node-llama-cpp/dist/index.js');
const root = mkdtempSync(join(tmpdir(), 'floe-gguf-reexport-'));
const disposers: (() => Promise<void> | void)[] = [];
after(async () => { for (const d of disposers.reverse()) await d(); });

function jsonOf(v: unknown): string {
  return JSON.stringify(v, (_k, x: unknown) => (typeof x === 'bigint' ? `${x}n` : x));
}

async function reexport(src: string, out: string, dtype: 'f32' | 'f16' | 'q8_0'): Promise<void> {
  const m = await loadModel(src);
  try { await hfToGguf(m, out, dtype); } finally { m.dispose(); }
}

async function tokenizerKeys(file: string): Promise<Map<string, string>> {
  const g = await readGguf(file);
  return new Map([...g.typed].filter(([k]) => k.startsWith('tokenizer.')).map(([k, v]) => [k, jsonOf(v)]));
}

async function greedy(file: string, ids: number[], n: number): Promise<number[]> {
  const { model, loaded } = await openModel(file, { threads: 1 });
  try {
    return generate(model, ids, { maxTokens: n, sampling: { temperature: 0 } }).outputIds;
  } finally { loaded.dispose(); }
}

const TEXTS = ['The old man said that he would come.', 'naïve café — 日本語 😀', '  two  spaces\n\nand a tab\t.'];

for (const [what, makeSource] of [
  ['byte-level BPE (floe-brown, q8_0)', async () => { const f = join(root, 'brown-q8_0.gguf'); await reexport(BROWN, f, 'q8_0'); return f; }],
  ['SentencePiece (llama.cpp fixture)', async () => SPM_GGUF],
] as const) {
  test(`a GGUF written from a GGUF keeps its tokenizer: ${what}`, { timeout: 120_000 }, async () => {
    const src = await makeSource();
    const out = join(root, `${what.split(' ')[0]}-f32.gguf`);
    await reexport(src, out, 'f32');
    const want = await tokenizerKeys(src);
    const got = await tokenizerKeys(out);
    assert.ok(want.has('tokenizer.ggml.model'), 'the source has a tokenizer');
    assert.deepEqual([...got.keys()].sort(), [...want.keys()].sort(), 'the same tokenizer.* keys');
    for (const [k, v] of want) assert.equal(got.get(k), v, `${k} as the source has it`);

    const a = await openModel(src, { threads: 1 });
    const b = await openModel(out, { threads: 1 });
    try {
      assert.ok(b.tokenizer, 'floe reads the written GGUF with a tokenizer');
      for (const t of TEXTS) assert.deepEqual(b.tokenizer.encode(t), a.tokenizer!.encode(t), `encode ${JSON.stringify(t)}`);
    } finally { a.loaded.dispose(); b.loaded.dispose(); }

    // llama.cpp loads it (it refuses a GGUF without tokenizer.ggml.model) and decodes as floe does on this file
    if (!existsSync(NLC)) return;
    const ids = (await openModel(out, { threads: 1 })).tokenizer!.encode(TEXTS[0]!);
    const floeTokens = await greedy(out, ids, 8);
    const { getLlama, LlamaLogLevel } = (await import(NLC)) as {
      getLlama(o: Record<string, unknown>): Promise<{ loadModel(o: { modelPath: string; gpuLayers: number }): Promise<{
        createContext(o: Record<string, unknown>): Promise<{ getSequence(): { evaluate(t: number[], o: Record<string, unknown>): AsyncGenerator<number> }; dispose(): Promise<void> }>;
        dispose(): Promise<void>;
      }>; dispose(): Promise<void> }>;
      LlamaLogLevel: { error: unknown };
    };
    const llama = await getLlama({ gpu: false, build: 'never', usePrebuiltBinaries: true, skipDownload: true, logLevel: LlamaLogLevel.error, progressLogs: false });
    disposers.push(() => llama.dispose());
    const model = await llama.loadModel({ modelPath: out, gpuLayers: 0 });
    disposers.push(() => model.dispose());
    const ctx = await model.createContext({ contextSize: 128, threads: 1 });
    disposers.push(() => ctx.dispose());
    const nlc: number[] = [];
    for await (const t of ctx.getSequence().evaluate(ids, { temperature: 0, yieldEogToken: true })) {
      nlc.push(t);
      if (nlc.length === floeTokens.length) break;
    }
    assert.deepEqual(nlc, floeTokens, 'llama.cpp greedy on the written GGUF = floe greedy on it');
  });
}
