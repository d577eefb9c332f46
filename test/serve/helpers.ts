// Server test helpers: a byte-level tokenizer sized to the fixture vocab, a servable model dir, a fake EngineClient.

import assert from 'node:assert/strict';
import { copyFileSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { APIError } from 'openai';
import {
  EngineRequestError, type EmbedOutput, type EmbedRequest, type EngineClient, type EngineInfo, type EngineStats,
  type GenerateOutput, type GenerateRequest,
} from '../../src/engine/protocol.js';
import { IncrementalDetokenizer } from '../../src/formats/detokenize.js';
import { Tokenizer, type TokenizerJson } from '../../src/formats/tokenizer.js';
import { repoPath } from '../repo.js';

export const FIXTURES = repoPath('test/fixtures/models/');

/** Ids 1..4 are special tokens (the fixtures' bos 1 and eos 2); every other id is the byte-level symbol of its byte. */
export const SPECIALS: ReadonlyArray<[number, string]> = [
  [1, '<|begin_of_text|>'], [2, '<|eot_id|>'], [3, '<|start_header_id|>'], [4, '<|end_header_id|>'],
];

export const CHAT_TEMPLATE =
  "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m.role }}<|end_header_id|>\n\n{{ m.content }}<|eot_id|>{% endfor %}" +
  "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}";

function byteSymbols(): string[] {
  const printable = (b: number) => (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  let next = 256;
  const out: string[] = [];
  for (let b = 0; b < 256; b++) out.push(String.fromCharCode(printable(b) ? b : next++));
  return out;
}

export function byteTokenizerFiles(): { tokenizerJson: TokenizerJson; tokenizerConfig: Record<string, unknown> } {
  const syms = byteSymbols();
  const vocab: Record<string, number> = {};
  const special = new Map(SPECIALS);
  syms.forEach((s, b) => { if (!special.has(b)) vocab[s] = b; });
  const tokenizerJson: TokenizerJson = {
    version: '1.0', truncation: null, padding: null, normalizer: null,
    added_tokens: SPECIALS.map(([id, content]) => ({ id, content, special: true, single_word: false, lstrip: false, rstrip: false, normalized: false })),
    pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
    post_processor: {
      type: 'TemplateProcessing',
      single: [{ SpecialToken: { id: '<|begin_of_text|>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
      pair: [],
      special_tokens: { '<|begin_of_text|>': { id: '<|begin_of_text|>', ids: [1], tokens: ['<|begin_of_text|>'] } },
    },
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: { type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null, fuse_unk: false, byte_fallback: false, vocab, merges: [] },
  };
  const tokenizerConfig = { bos_token: '<|begin_of_text|>', eos_token: '<|eot_id|>', clean_up_tokenization_spaces: false, chat_template: CHAT_TEMPLATE };
  return { tokenizerJson, tokenizerConfig };
}

export function byteTokenizer(): Tokenizer {
  const { tokenizerJson, tokenizerConfig } = byteTokenizerFiles();
  return new Tokenizer(tokenizerJson, tokenizerConfig);
}

/** A temp HF dir: the fixture's config + weights, plus the byte tokenizer and chat template. */
export function makeModelDir(fixture = 'gqa_f32'): string {
  const dir = mkdtempSync(join(tmpdir(), `floe-serve-${fixture}-`));
  for (const f of ['config.json', 'model.safetensors']) copyFileSync(join(FIXTURES, fixture, f), join(dir, f));
  const { tokenizerJson, tokenizerConfig } = byteTokenizerFiles();
  writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify(tokenizerJson));
  writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify(tokenizerConfig));
  return dir;
}

/** Deterministic stand-in for the engine: completion `index` of a request emits printable bytes derived from the prompt. */
export class FakeEngine implements EngineClient {
  readonly requests: Array<Omit<GenerateRequest, 'kind'>> = [];
  readonly aborted: string[] = [];
  refuse: EngineRequestError | null = null;
  delayMs = 0;
  script: number[] | null = null; // when set, every completion emits these tokens instead
  failed: string | null = null; // what failure() reports
  cutAt: number | null = null; // when set, completions end with the engine's 'abort' at this token, as a shutdown does
  readonly info: EngineInfo;

  constructor(private readonly tokenizer: Tokenizer, info: Partial<EngineInfo> = {}) {
    this.info = {
      modelId: 'fake', maxModelLen: 256, vocabSize: 256, hiddenSize: 8, eosTokenIds: [2], kvDtype: 'f32',
      kvBlocks: 64, blockSize: 16, kvTokens: 1024, maxRequestTokens: 256, maxNumSeqs: 64, ...info,
    };
  }

  /** The token ids FakeEngine generates for a prompt. */
  static tokens(promptIds: readonly number[], index: number, count: number): number[] {
    const seed = promptIds.reduce((s, t) => (s * 31 + t) % 9973, 7) + index * 13;
    return Array.from({ length: count }, (_, k) => 0x61 + ((seed + k * 5) % 26)); // 'a'..'z'
  }

  async *generate(req: Omit<GenerateRequest, 'kind'>, signal?: AbortSignal): AsyncIterable<GenerateOutput> {
    this.requests.push(req);
    if (this.refuse) throw this.refuse;
    const gen = Array.from({ length: req.n }, (_, i) => this.script?.slice(0, req.maxTokens) ?? FakeEngine.tokens(req.promptIds, i, req.maxTokens));
    const count = gen[0]!.length;
    const detok = gen.map(() => new IncrementalDetokenizer(this.tokenizer, { skipSpecialTokens: req.skipSpecialTokens, promptIds: req.promptIds }));
    for (let k = 0; k < count; k++) {
      if (this.delayMs) await new Promise((r) => setTimeout(r, this.delayMs));
      for (let i = 0; i < req.n; i++) {
        const cut = k === this.cutAt;
        const done = signal?.aborted || cut || k === count - 1;
        const tok = gen[i]![k]!;
        yield {
          kind: 'generate', id: req.id, index: i, tokenIds: [tok], text: detok[i]!.push(tok) + (done ? detok[i]!.flush() : ''),
          logprobs: req.logprobs === null ? null : [{ token: tok, logprob: -0.5, top: [[tok, -0.5], [0x20, -1.5], [tok ^ 1, -2.5]].slice(0, req.logprobs) as Array<[number, number]> }],
          finishReason: done ? (signal?.aborted || cut ? 'abort' : 'length') : null, stopReason: null,
          usage: { promptTokens: req.promptIds.length, cachedTokens: 0, completionTokens: k + 1 },
          promptLogprobs: k === 0 && i === 0 && req.promptLogprobs !== null
            ? req.promptIds.map((t, j) => (j === 0 ? null : { token: t, logprob: -1 - j, top: [[t, -1 - j], [t ^ 1, -9 - j]] as Array<[number, number]> })) : null,
        };
      }
      if (signal?.aborted || k === this.cutAt) return;
    }
  }

  async embed(req: Omit<EmbedRequest, 'kind'>): Promise<EmbedOutput> {
    if (this.refuse) throw this.refuse;
    const e = new Float32Array(this.info.hiddenSize).map((_, i) => req.promptIds.length + i / 8);
    return { kind: 'embed', id: req.id, embedding: e, promptTokens: req.promptIds.length };
  }

  abort(id: string): void {
    this.aborted.push(id);
  }

  async stats(): Promise<EngineStats> {
    return {
      running: 0, waiting: 0, kvBlocksTotal: this.info.kvBlocks, kvBlocksUsed: 0, kvBlocksCached: 0, blockSize: this.info.blockSize,
      prefixQueriedTokens: 0, prefixHitTokens: 0, preemptions: 0, promptTokens: 0, generatedTokens: 0, steps: 0,
    };
  }

  async shutdown(): Promise<void> {}

  failure(): string | null {
    return this.failed;
  }
}

/** What the API answered a call it should refuse (the openai client's APIError, flattened); fails the test, saying `accepted`, if it succeeded. */
export async function apiRefusal(p: Promise<unknown>, accepted = 'accepted'): Promise<{ status: number | undefined; param: string | null | undefined; code: string | null | undefined; message: string }> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof APIError, String(e));
    return { status: e.status, param: e.param, code: e.code, message: e.message };
  }
  assert.fail(accepted);
}

