// `floe info --dtype fp8|bf16`: the dtypes per weight kind and the weights' bytes it predicts from the headers equal
// what loadModel(path, { dtype }) really holds after converting, on an f32 model (floe-brown), an FP8 checkpoint
// (linears stay fp8) and a GGUF mixing q8_0 and f16 linears (q8_0 stays); a bad --dtype exits 2 before loading.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadModel, type LoadDType } from '../../src/formats/load.js';
import { openModel } from '../../src/model/open.js';
import { defaultKvDtype } from '../../src/model/generate.js';
import { runEach, type RunResult } from './run-each.js';
import { repoPath } from '../repo.js';

const fixture = (p: string) => repoPath(`test/fixtures/${p}`);
const MODELS = [
  repoPath('models/floe-brown'), // f32, tied head
  fixture('models/fp8_block'), // fp8 linears with 128×128 block scales; embedding, head, norms bf16
  fixture('gguf-independent/tiny-llama.gguf'), // q8_0 and f16 linears, q8_0 embedding, f16 head, f32 norms
];

const MISSING = '/nonexistent/floe-model';
/** Every `floe info` argv of this file: each model and --dtype, in --json and text; the refused --dtype values. */
const ARGVS = [
  ...MODELS.flatMap((path) => [undefined, 'bf16', 'fp8'].flatMap((d) => {
    const args = ['info', path, ...(d ? ['--dtype', d] : [])];
    return [[...args, '--json'], args];
  })),
  ['info', MISSING, '--dtype', 'f16'], ['info', MISSING, '--dtype', 'int4', '--json'],
];
let runs: Map<string, RunResult> | undefined;

/**
 * `floe info ARGS` as the built CLI answers it: all of ARGVS run once, on first use, as run() calls in one process
 * (run-each.ts) instead of a bin/floe.js process each (~0.3 s apiece, 22 of them).
 */
function floe(...args: string[]) {
  runs ??= ((rs) => new Map(ARGVS.map((a, i) => [JSON.stringify(a), rs[i]!])))(runEach(ARGVS));
  const r = runs.get(JSON.stringify(args));
  assert.ok(r, `floe ${args.join(' ')} is not in ARGVS`);
  return { code: r.status, out: r.stdout, err: r.stderr };
}

/** The test's own reading of a tensor name: which weight kind `floe info` files it under. */
function kindOf(name: string): string {
  if (/^model\.layers\.\d+\.(self_attn\.[qkvo]_proj|mlp\.(gate|up|down)_proj)\.weight$/.test(name)) return 'linear';
  if (name === 'model.embed_tokens.weight') return 'embedding';
  if (name === 'lm_head.weight') return 'head';
  if (/^model\.(layers\.\d+\.(input_layernorm|post_attention_layernorm)|norm)\.weight$/.test(name)) return 'norms';
  return 'other';
}

/** What the loaded (converted) model holds: each kind's dtypes and the bytes of every tensor's data and scales. */
async function held(path: string, dtype: LoadDType | undefined) {
  const m = await loadModel(path, dtype ? { dtype } : {});
  const kinds: Record<string, Set<string>> = {};
  let bytes = 0;
  for (const [name, t] of m.tensors) {
    (kinds[kindOf(name)] ??= new Set()).add(t.dtype);
    bytes += t.data.byteLength + (t.scale?.byteLength ?? 0);
  }
  if (m.config.tieWordEmbeddings) kinds.head = kinds.embedding!;
  const q0 = m.tensors.get('model.layers.0.self_attn.q_proj.weight')!.dtype;
  m.dispose();
  return { kinds, bytes, q0 };
}

const dtypesOf = (s: string | null | undefined): string[] => (s ? s.split(' + ').sort() : []);

for (const path of MODELS) {
  for (const dtype of [undefined, 'bf16', 'fp8'] as const) {
    const name = `${path.split('/').pop()}${dtype ? ` --dtype ${dtype}` : ''}`;
    test(`floe info ${name}: held dtypes per kind and weight bytes equal what loadModel holds`, async () => {
      const args = ['info', path, ...(dtype ? ['--dtype', dtype] : [])];
      const r = floe(...args, '--json');
      assert.equal(r.code, 0, r.err);
      const j = JSON.parse(r.out);
      const want = await held(path, dtype);
      assert.equal(j.weights.converted, dtype ?? null);
      assert.equal(j.weights.bytes, want.bytes, 'bytes held after the conversion');
      for (const k of ['linear', 'embedding', 'head', 'norms', 'other']) {
        assert.deepEqual(dtypesOf(j.weights[k]), [...(want.kinds[k] ?? [])].sort(), `${k}: ${j.weights[k]}`);
      }
      // the stored figures stay the file's
      const stored = await held(path, undefined);
      assert.equal(j.weight_bytes, stored.bytes);
      // the KV cache dtype generate / serve default to with this --dtype (the engine's rule, on the opened model)
      const opened = await openModel(path, { load: dtype ? { dtype } : undefined, tokenizerOptional: true });
      assert.equal(j.kv_cache.dtype, defaultKvDtype(opened.model));
      assert.equal(want.q0 === 'f32', j.kv_cache.dtype === 'f32');

      // the text form says the same
      const t = floe(...args);
      assert.equal(t.code, 0, t.err);
      const mib = (b: number) => `${(b / 2 ** 20).toFixed(1)} MiB`;
      const weightsLine = /^weights +(.*)$/m.exec(t.out)?.[1];
      assert.equal(weightsLine, dtype ? `${mib(want.bytes)} with --dtype ${dtype} (${mib(stored.bytes)} as stored)` : mib(stored.bytes));
      const heldLine = /^held +(.*)$/m.exec(t.out)?.[1] ?? '';
      for (const k of ['linear', 'embedding', 'head', 'norms']) {
        const m = new RegExp(`(?:^|, )${k} ([^,(]+?)(?: \\(tied\\))?(?:,|$| \\(--dtype)`).exec(heldLine);
        assert.deepEqual(dtypesOf(m?.[1]), [...(want.kinds[k] ?? [])].sort(), `${k} in '${heldLine}'`);
      }
      if (dtype) assert.match(heldLine, new RegExp(` \\(--dtype ${dtype}\\)$`));
    });
  }
}

test('floe info --dtype on floe-brown converts: bf16 halves every 2-D weight, fp8 adds one f32 scale per linear row', async () => {
  // an expectation from the config alone, independent of both the prediction and the conversion
  const path = MODELS[0]!;
  const { config: c, tensors } = await loadModel(path);
  const { hiddenSize: D, intermediateSize: F, numHeads: H, numKvHeads: K, headDim: E, numLayers: L, vocabSize: V } = c;
  const rowsAndCells = [[H * E, D], [K * E, D], [K * E, D], [D, H * E], [F, D], [F, D], [D, F]] as const; // q k v o gate up down
  const linearCells = L * rowsAndCells.reduce((a, [n, k]) => a + n * k, 0);
  const linearRows = L * rowsAndCells.reduce((a, [n]) => a + n, 0);
  const norms = (2 * L + 1) * D;
  assert.ok(c.tieWordEmbeddings && tensors.get('model.embed_tokens.weight')!.dtype === 'f32');
  const info = (d: string) => JSON.parse(floe('info', path, '--dtype', d, '--json').out).weights.bytes;
  assert.equal(info('bf16'), 2 * (linearCells + V * D) + 4 * norms);
  assert.equal(info('fp8'), linearCells + 4 * linearRows + 4 * (V * D) + 4 * norms);
});

test('floe info: a bad --dtype exits 2 naming fp8 and bf16, before the model (a missing one here) is opened', () => {
  const missing = MISSING;
  const r = floe('info', missing, '--dtype', 'f16');
  assert.equal(r.code, 2, r.err);
  assert.match(r.err, /--dtype expects fp8 \(.*\) or bf16 \(.*\), got 'f16'/);
  assert.doesNotMatch(r.err, /cannot open model|nonexistent\/floe-model:/, 'the model was not opened');
  const j = floe('info', missing, '--dtype', 'int4', '--json');
  assert.equal(j.code, 2);
  assert.equal(JSON.parse(j.out).error.type, 'usage_error');
  assert.match(JSON.parse(j.out).error.message, /fp8.*bf16.*got 'int4'/);
});
