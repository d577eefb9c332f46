// Writes test/fixtures/spm/spm-llama.gguf (a tiny random Llama carrying the SentencePiece vocabulary that
// scripts/make_spm_fixture.py trained) and llama.cpp's ids for every case, from node-llama-cpp on that file.
//
// Run by hand after the .py script: node --import tsx scripts/make_spm_fixture.ts [path/to/node-llama-cpp]
// (default /work/main/bench/node_modules/node-llama-cpp; read-only use of its prebuilt llama.cpp).

import * as fs from 'node:fs';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import { loadModel } from '../src/formats/load.js';
import { GgufType } from '../src/formats/gguf.js';
import { gv, hfToGguf } from '../src/formats/gguf-writer.js';
import { makeTinyHf } from '../test/formats/fixtures.js';
import { packageRoot } from '../src/model/builtin.js';

const OUT = path.join(packageRoot(), 'test', 'fixtures', 'spm');
const NLC = process.argv[2] ?? '/work/main/bench/node_modules/node-llama-cpp';

interface SpFixture { bos_id: number; eos_id: number; unk_id: number; vocab: { piece: string; score: number; type: number }[]; cases: { text: string }[] }
type Token = number;
interface NlcModel {
  tokenize(text: string, specialTokens?: boolean): Token[];
  detokenize(tokens: readonly Token[], specialTokens?: boolean): string;
  dispose(): Promise<void>;
}
interface Nlc {
  getLlama(o: Record<string, unknown>): Promise<{ loadModel(o: { modelPath: string; gpuLayers: number; vocabOnly?: boolean }): Promise<NlcModel>; dispose(): Promise<void> }>;
  LlamaLogLevel: { error: unknown };
}

async function main(): Promise<void> {
  const sp = JSON.parse(fs.readFileSync(path.join(OUT, 'sentencepiece.json'), 'utf8')) as SpFixture;
  const V = sp.vocab.length;
  const tiny = makeTinyHf({ vocab: V, hidden: 32, ffn: 64, layers: 1, heads: 4, kvHeads: 2, tied: true, dtype: 'F16', seed: 7, extraConfig: { eos_token_id: sp.eos_id, bos_token_id: sp.bos_id, rope_scaling: null } });
  const gguf = path.join(OUT, 'spm-llama.gguf');
  const model = await loadModel(tiny.dir);
  // tokenizer.ggml.* as llama.cpp's convert_hf_to_gguf.py writes them for a Llama 2 tokenizer.model
  await hfToGguf(model, gguf, 'f16', {
    tokenizerJson: null, name: 'spm-llama',
    extraMetadata: {
      'tokenizer.ggml.model': gv.str('llama'),
      'tokenizer.ggml.pre': gv.str('default'),
      'tokenizer.ggml.tokens': gv.arr(GgufType.STRING, sp.vocab.map((v) => v.piece)),
      'tokenizer.ggml.scores': gv.arr(GgufType.F32, sp.vocab.map((v) => v.score)),
      'tokenizer.ggml.token_type': gv.arr(GgufType.I32, sp.vocab.map((v) => v.type)),
      'tokenizer.ggml.bos_token_id': gv.u32(sp.bos_id),
      'tokenizer.ggml.eos_token_id': gv.u32(sp.eos_id),
      'tokenizer.ggml.unknown_token_id': gv.u32(sp.unk_id),
      'tokenizer.ggml.add_bos_token': gv.bool(true),
      'tokenizer.ggml.add_eos_token': gv.bool(false),
    },
  });
  model.dispose();
  fs.rmSync(tiny.dir, { recursive: true, force: true });

  const pkg = JSON.parse(fs.readFileSync(path.join(NLC, 'package.json'), 'utf8')) as { version: string };
  const { getLlama, LlamaLogLevel } = (await import(pathToFileURL(path.join(NLC, 'dist', 'index.js')).href)) as Nlc;
  const llama = await getLlama({ gpu: false, build: 'never', usePrebuiltBinaries: true, skipDownload: true, logLevel: LlamaLogLevel.error, progressLogs: false });
  const m = await llama.loadModel({ modelPath: gguf, gpuLayers: 0, vocabOnly: true });
  const bos = sp.bos_id;
  const cases = sp.cases.map(({ text }) => {
    const ids = m.tokenize(text, false);
    const idsSpecial = m.tokenize(text, true);
    return {
      text,
      ids, // tokenize(text, specialTokens=false): no BOS, "<s>" in the text is plain text
      ids_special: idsSpecial, // tokenize(text, specialTokens=true): control tokens in the text become their ids
      decoded: m.detokenize(ids, false),
      decoded_special: m.detokenize(idsSpecial, true), // control tokens written out
      decoded_bos: m.detokenize([bos, ...ids], false), // BOS first: llama.cpp keeps the first piece's leading space
      decoded_bos_special: m.detokenize([bos, ...idsSpecial], true),
    };
  });
  await m.dispose();
  await llama.dispose();
  const out = {
    provenance: `node-llama-cpp ${pkg.version} (prebuilt llama.cpp) on spm-llama.gguf, scripts/make_spm_fixture.ts; ` +
      'tokenize = common_tokenize(add_special=false, parse_special), detokenize = llama_detokenize(remove_special=false, unparse_special)',
    bos_id: bos,
    cases,
  };
  fs.writeFileSync(path.join(OUT, 'llama-cpp.json'), JSON.stringify(out, null, 0) + '\n');
  console.log(`${gguf}: ${fs.statSync(gguf).size} bytes; ${cases.length} cases -> llama-cpp.json`);
}

await main();
