// A GGUF whose tokenizer floe cannot build: `floe generate --prompt-ids` warns and runs; --prompt and openModel refuse.
// Runs the built CLI (dist/: `npx tsc -p tsconfig.json`) as a subprocess.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { GgufType } from '../../src/formats/gguf.js';
import { gv, hfToGguf } from '../../src/formats/gguf-writer.js';
import { loadModel } from '../../src/formats/load.js';
import { LlamaModel } from '../../src/model/llama.js';
import { generate } from '../../src/model/generate.js';
import { openModel } from '../../src/model/open.js';
import { selectBackend } from '../../src/backend/select.js';
import { makeTinyHf } from './fixtures.js';
import { repoPath } from '../repo.js';

const BIN = repoPath('bin/floe.js');

test('generate --prompt-ids on a GGUF with an unknown tokenizer.ggml.model: warning on stderr, ids as without the tokenizer', async () => {
  const tiny = makeTinyHf({ vocab: 64, seed: 11 });
  const gguf = path.join(tiny.dir, 'unknown-tok.gguf');
  try {
    const src = await loadModel(tiny.dir);
    const tokens = Array.from({ length: 64 }, (_, i) => `t${i}`);
    await hfToGguf(src, gguf, 'f32', {
      tokenizerJson: null,
      extraMetadata: { 'tokenizer.ggml.model': gv.str('mystery-wordpiece'), 'tokenizer.ggml.tokens': gv.arr(GgufType.STRING, tokens) },
    });
    src.dispose();

    const args = ['generate', '--model', gguf, '--prompt-ids', '5,6,7', '--max-tokens', '4', '--temperature', '0', '--backend', 'reference', '--json'];
    const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 60_000 });
    assert.equal(r.status, 0, r.stderr);
    // the warning names the file (tokenizerFromGguf prefixes the file its metadata came from)
    assert.ok(r.stderr.includes(`warning: ${gguf}: GGUF metadata tokenizer.ggml.model: 'mystery-wordpiece' is not supported`), r.stderr);
    assert.match(r.stderr, /generating without a tokenizer/);
    const out = JSON.parse(r.stdout.trim()) as { prompt_ids: number[]; output_ids: number[]; text: string };
    assert.deepEqual(out.prompt_ids, [5, 6, 7]);
    // the same greedy ids as generating in-process from the loaded weights (no tokenizer involved)
    const loaded = await loadModel(gguf);
    const model = LlamaModel.fromTensors(loaded.config, loaded.tensors, selectBackend('reference'), loaded.ropeFreqFactors);
    const ref = generate(model, [5, 6, 7], { maxTokens: 4, sampling: { temperature: 0 }, stopTokenIds: loaded.config.eosTokenIds });
    assert.deepEqual(out.output_ids, ref.outputIds);
    assert.ok(out.output_ids.length > 0);

    // a text prompt needs the tokenizer: the error says why there is none
    const t = spawnSync(process.execPath, [BIN, 'generate', '--model', gguf, '--prompt', 'hi', '--max-tokens', '1'], { encoding: 'utf8', timeout: 60_000 });
    assert.notEqual(t.status, 0);
    assert.match(t.stderr, /tokenizer\.ggml\.model: 'mystery-wordpiece' is not supported/);
    await assert.rejects(openModel(gguf, { backend: 'reference' }), /'mystery-wordpiece' is not supported/);
    const opened = await openModel(gguf, { backend: 'reference', tokenizerOptional: true });
    assert.equal(opened.tokenizer, null);
    assert.match(opened.tokenizerError ?? '', /'mystery-wordpiece' is not supported/);
    opened.loaded.dispose();
  } finally {
    fs.rmSync(tiny.dir, { recursive: true, force: true });
  }
});
