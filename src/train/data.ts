// Training data: JSONL ({"text"} | {"prompt","completion"} | {"messages", "tools"?}) -> token samples with loss masks ->
// packed micro-batches (attention stays inside each sample), in a seeded, resumable order.
//
// T tokens of a packed batch, S samples in it.

import { accessSync, constants, statSync } from 'node:fs';
import type { ChatMessage, ChatTemplate } from '../formats/chat-template.js';
import { fileLines, stringLines, type TextLine } from '../formats/lines.js';
import type { Tokenizer } from '../formats/tokenizer.js';
import type { PackedBatch } from '../model/llama-train.js';
import { mix32, Rng } from './rng.js';

export type Example =
  | { readonly kind: 'text'; readonly text: string }
  | { readonly kind: 'completion'; readonly prompt: string; readonly completion: string }
  | { readonly kind: 'chat'; readonly messages: readonly ChatMessage[]; readonly tools?: readonly unknown[] };

/** One tokenized example: mask[j] = 1 when token j is predicted with loss. */
export interface Sample {
  readonly tokens: Int32Array; // (n)
  readonly mask: Uint8Array; // (n); mask[0] is never used (nothing predicts the first token)
  readonly line: number; // 1-based line in its file
}

export interface DataOptions {
  readonly maxSeqLen: number; // longer samples are truncated (keeping the start)
  /** Loss on prompt / user / system tokens too (default false: only completion / assistant tokens). */
  readonly trainOnPrompt?: boolean;
}

export type SampleEncoder = Pick<Tokenizer, 'encode' | 'bosToken' | 'eosToken' | 'eosIds'>;

const where = (file: string, line: number) => `${file}:${line}`;

/** The text after a leading UTF-8 byte order mark (editors on Windows write one; TextDecoder drops it, readFileSync keeps it). */
export const withoutBom = (text: string): string => (text.charCodeAt(0) === 0xfeff ? text.slice(1) : text);

/** Parse every line (blank lines skipped); throws at the first malformed line with its number and what is wrong. */
export function parseJsonl(text: string, file: string): { example: Example; line: number }[] {
  return parseJsonlLines(stringLines(text), file);
}

/** parseJsonl over lines as fileLines / stringLines give them (a file too large for one string is read line by line). */
export function parseJsonlLines(lines: Iterable<Pick<TextLine, 'text' | 'number'>>, file: string): { example: Example; line: number }[] {
  const out: { example: Example; line: number }[] = [];
  for (const { text, number: line } of lines) {
    const raw = line === 1 ? withoutBom(text) : text;
    if (raw.trim() === '') continue;
    let v: unknown;
    try {
      v = JSON.parse(raw);
    } catch (e) {
      throw new Error(`${where(file, line)}: invalid JSON: ${(e as Error).message}`);
    }
    out.push({ example: toExample(v, file, line), line });
  }
  if (out.length === 0) throw new Error(`${file}: no examples (the file is empty)`);
  return out;
}

function toExample(v: unknown, file: string, line: number): Example {
  const at = where(file, line);
  if (v === null || typeof v !== 'object' || Array.isArray(v)) {
    throw new Error(`${at}: expected a JSON object with "text", "prompt"+"completion" or "messages", got ${Array.isArray(v) ? 'an array' : v === null ? 'null' : typeof v}`);
  }
  const o = v as Record<string, unknown>;
  const str = (k: string) => {
    if (typeof o[k] !== 'string') throw new Error(`${at}: "${k}" must be a string, got ${o[k] === null ? 'null' : typeof o[k]}`);
    return o[k] as string;
  };
  if ('messages' in o) {
    const m = o.messages;
    if (!Array.isArray(m) || m.length === 0) throw new Error(`${at}: "messages" must be a non-empty array`);
    const messages = m.map((msg, j) => {
      if (msg === null || typeof msg !== 'object' || typeof (msg as ChatMessage).role !== 'string') throw new Error(`${at}: messages[${j}] must be an object with a string "role"`);
      const calls = (msg as ChatMessage).tool_calls;
      const c = (msg as ChatMessage).content;
      // OpenAI's per-turn weight: 0 leaves an assistant turn out of the loss (still context), 1 (the default) trains on it
      const w = (msg as ChatMessage).weight;
      if (w !== undefined) {
        if ((msg as ChatMessage).role !== 'assistant') throw new Error(`${at}: messages[${j}].weight is read on assistant messages only (role '${(msg as ChatMessage).role}')`);
        if (w !== 0 && w !== 1) throw new Error(`${at}: messages[${j}].weight must be 0 (leave the turn out of the loss) or 1, got ${JSON.stringify(w)}`);
      }
      if (Array.isArray(calls) && calls.length > 0 && (c === null || c === undefined)) return { ...(msg as ChatMessage), content: '', tool_calls: templateToolCalls(calls, `${at}: messages[${j}].tool_calls`) };
      if (typeof c !== 'string') throw new Error(`${at}: messages[${j}].content must be a string, got ${c === null ? 'null' : typeof c}`);
      return Array.isArray(calls) ? { ...(msg as ChatMessage), tool_calls: templateToolCalls(calls, `${at}: messages[${j}].tool_calls`) } : msg as ChatMessage;
    });
    if (!messages.some((msg) => msg.role === 'assistant')) throw new Error(`${at}: "messages" has no assistant message to learn from`);
    if ('tools' in o && o.tools !== undefined) {
      if (!Array.isArray(o.tools)) throw new Error(`${at}: "tools" must be an array of tool definitions, got ${o.tools === null ? 'null' : typeof o.tools}`);
      return { kind: 'chat', messages, tools: o.tools };
    }
    return { kind: 'chat', messages };
  }
  if ('prompt' in o || 'completion' in o) {
    if (!('completion' in o)) throw new Error(`${at}: "prompt" without "completion"`);
    if (!('prompt' in o)) throw new Error(`${at}: "completion" without "prompt"`);
    return { kind: 'completion', prompt: str('prompt'), completion: str('completion') };
  }
  if ('text' in o) return { kind: 'text', text: str('text') };
  throw new Error(`${at}: expected "text", "prompt"+"completion" or "messages", got keys [${Object.keys(o).join(', ')}]`);
}

/** OpenAI's tool_calls (arguments a JSON string) -> the form chat templates read (arguments an object), as the server does. */
function templateToolCalls(calls: readonly unknown[], at: string): unknown[] {
  return calls.map((c, k) => {
    const f = (c as { function?: { name?: unknown; arguments?: unknown } } | null)?.function;
    if (!f || typeof f.name !== 'string') throw new Error(`${at}[${k}]: expected {"type": "function", "function": {"name", "arguments"}}`);
    if (typeof f.arguments !== 'string') return c;
    let args: unknown;
    try { args = JSON.parse(f.arguments); } catch (e) { throw new Error(`${at}[${k}].function.arguments: not valid JSON: ${(e as Error).message}`); }
    if (args === null || typeof args !== 'object' || Array.isArray(args)) throw new Error(`${at}[${k}].function.arguments: must encode a JSON object`);
    return { ...(c as object), function: { ...f, arguments: args } };
  });
}

/** Tokens and loss mask of one example. Text: BOS text EOS, loss everywhere; completion: loss on completion + EOS. */
export function encodeExample(ex: Example, tok: SampleEncoder, template: ChatTemplate | null, opts: DataOptions, at: string): { tokens: number[]; mask: number[] } {
  const eos = tok.eosIds[0];
  const all = !!opts.trainOnPrompt;
  const tokens: number[] = [];
  const mask: number[] = [];
  const push = (ids: readonly number[], m: number) => { for (const id of ids) { tokens.push(id); mask.push(m); } };
  switch (ex.kind) {
    case 'text':
      push(tok.encode(ex.text, { addSpecialTokens: true }), 1);
      if (eos !== undefined) push([eos], 1);
      break;
    case 'completion':
      push(tok.encode(ex.prompt, { addSpecialTokens: true }), all ? 1 : 0);
      push(tok.encode(ex.completion, { addSpecialTokens: false }), 1);
      if (eos !== undefined) push([eos], 1);
      break;
    case 'chat': {
      if (!template) throw new Error(`${at}: "messages" needs a chat template, and the model has none`);
      const opt = { bosToken: tok.bosToken ?? '', eosToken: tok.eosToken ?? '', ...(ex.tools ? { tools: ex.tools } : {}) };
      const full = template.render(ex.messages, opt);
      // pieces of the rendered text: [done, g) context, [g, e) an assistant turn (loss), then the rest
      let done = 0;
      const piece = (end: number, m: number) => {
        if (end > done) push(tok.encode(full.slice(done, end), { addSpecialTokens: false }), m);
        done = Math.max(done, end);
      };
      // each assistant turn's [g, e): where the rendering up to it (with the generation prompt) and through it end
      const turns: [number, number, number][] = [];
      let located = true;
      ex.messages.forEach((msg, k) => {
        if (msg.role !== 'assistant' || !located) return;
        const g = template.render(ex.messages.slice(0, k), { ...opt, addGenerationPrompt: true });
        const e = template.render(ex.messages.slice(0, k + 1), opt);
        if (!full.startsWith(g) || !full.startsWith(e) || g.length > e.length) {
          // with the loss on every token the turns need not be found: the whole rendering is the target
          if (all) return void (located = false);
          throw new Error(`${at}: the chat template does not render messages[0..${k}] as a prefix of the whole conversation, so assistant tokens cannot be located (use --train-on-prompt)`);
        }
        turns.push([g.length, e.length, msg.weight === 0 && !all ? 0 : 1]);
      });
      if (located) for (const [g, e, m] of turns) { piece(g, all ? 1 : 0); piece(e, m); }
      piece(full.length, all ? 1 : 0);
      break;
    }
  }
  return { tokens, mask };
}

/**
 * A data file's open, before any work (finetune checks its files before it makes --out): the error loadSamples would
 * give, `FILE: cannot read data: ...`, for a file that is missing, unreadable or a directory.
 */
export function checkDataFile(file: string): void {
  try {
    if (statSync(file).isDirectory()) throw Object.assign(new Error(`EISDIR: a directory, not a JSONL file`), { code: 'EISDIR' });
    accessSync(file, constants.R_OK);
  } catch (e) {
    throw new Error(`${file}: cannot read data: ${(e as Error).message}`);
  }
}

/**
 * Read and tokenize a JSONL file. Every line is parsed and checked before anything is tokenized, so a malformed
 * line fails fast with its number. Samples are truncated to maxSeqLen; samples with nothing to learn are dropped.
 */
export function loadSamples(file: string, tok: SampleEncoder, template: ChatTemplate | null, opts: DataOptions): EncodedSamples {
  let parsed: { example: Example; line: number }[];
  try {
    parsed = parseJsonlLines(fileLines(file), file); // line by line: a file past the longest string (~512 MiB) reads too
  } catch (e) {
    // a file system error (ENOENT, EISDIR) carries a code; a malformed line is already named by file:line
    if ((e as NodeJS.ErrnoException).code !== undefined) throw new Error(`${file}: cannot read data: ${(e as Error).message}`);
    throw e;
  }
  const r = encodeSamples(parsed, file, tok, template, opts);
  if (r.samples.length === 0) throw new Error(`${file}: no example has a token to learn from (after truncation to ${opts.maxSeqLen})`);
  return r;
}

export interface EncodedSamples {
  readonly samples: Sample[];
  readonly dropped: number; // examples without a target (after truncation)
  readonly truncated: number; // samples cut to maxSeqLen
  readonly kinds: readonly Example['kind'][]; // (samples.length) the format each sample was read from
}

/** Tokens and loss masks of parsed examples of `file`, truncated to maxSeqLen; those with nothing to learn are dropped. */
export function encodeSamples(parsed: readonly { example: Example; line: number }[], file: string, tok: SampleEncoder, template: ChatTemplate | null, opts: DataOptions): EncodedSamples {
  if (parsed.some((p) => p.example.kind === 'chat') && !template) {
    const first = parsed.find((p) => p.example.kind === 'chat')!;
    throw new Error(`${where(file, first.line)}: "messages" needs a chat template, and the model has none`);
  }
  const samples: Sample[] = [];
  const kinds: Example['kind'][] = [];
  let dropped = 0;
  let truncated = 0;
  for (const { example, line } of parsed) {
    const { tokens, mask } = encodeExample(example, tok, template, opts, where(file, line));
    let n = tokens.length;
    if (n > opts.maxSeqLen) { n = opts.maxSeqLen; truncated++; }
    const s: Sample = { tokens: Int32Array.from(tokens.slice(0, n)), mask: Uint8Array.from(mask.slice(0, n)), line };
    if (countTargets(s) === 0) { dropped++; continue; }
    samples.push(s);
    kinds.push(example.kind);
  }
  return { samples, dropped, truncated, kinds };
}

export function countTargets(s: Sample): number {
  let n = 0;
  for (let j = 1; j < s.tokens.length; j++) n += s.mask[j]!;
  return n;
}

/** Concatenate samples row-wise: row j predicts token j+1 of its sample when that token is masked in. */
export function packSamples(samples: readonly Sample[]): PackedBatch {
  let T = 0;
  for (const s of samples) T += s.tokens.length;
  const tokens = new Int32Array(T);
  const targets = new Int32Array(T).fill(-1);
  const positions = new Int32Array(T);
  const segStart = new Int32Array(samples.length + 1);
  let o = 0;
  samples.forEach((s, i) => {
    segStart[i] = o;
    const n = s.tokens.length;
    tokens.set(s.tokens, o);
    for (let j = 0; j < n; j++) {
      positions[o + j] = j;
      if (j + 1 < n && s.mask[j + 1]) targets[o + j] = s.tokens[j + 1]!;
    }
    o += n;
  });
  segStart[samples.length] = T;
  return { tokens, targets, positions, segStart };
}

export interface BatchingOptions {
  /** Sequences per micro-batch (default 1 when batchTokens is not given). */
  readonly batchSize?: number;
  /** Tokens per micro-batch: samples are packed while they fit (a longer sample goes alone). */
  readonly batchTokens?: number;
  readonly shuffle: boolean;
  readonly seed: number;
}

/** Where the loader stands: the order of an epoch is a function of (seed, epoch), so this is the whole state. */
export interface DataPosition { readonly epoch: number; readonly cursor: number }

/** Micro-batches over the samples, epoch after epoch, in a seeded order (or file order with shuffle false). */
export class DataLoader {
  epoch = 0;
  cursor = 0; // index into this epoch's order
  private order: number[] = [];

  constructor(readonly samples: readonly Sample[], readonly opts: BatchingOptions) {
    if (samples.length === 0) throw new Error('no samples');
    if (opts.batchSize !== undefined && opts.batchTokens !== undefined) throw new Error('give either a batch size in sequences or in tokens, not both');
    if (opts.batchSize !== undefined && !(Number.isInteger(opts.batchSize) && opts.batchSize >= 1)) throw new RangeError(`batch size must be an integer >= 1, got ${opts.batchSize}`);
    if (opts.batchTokens !== undefined && !(Number.isInteger(opts.batchTokens) && opts.batchTokens >= 1)) throw new RangeError(`batch tokens must be an integer >= 1, got ${opts.batchTokens}`);
    this.order = this.epochOrder(0);
  }

  epochOrder(epoch: number): number[] {
    const idx = this.samples.map((_, i) => i);
    return this.opts.shuffle ? new Rng(mix32(this.opts.seed, epoch, 0x5eed)).shuffle(idx) : idx;
  }

  /** Sample indices of the micro-batch starting at `cursor` of `order`. */
  private take(order: readonly number[], cursor: number): number[] {
    const out: number[] = [];
    if (this.opts.batchTokens !== undefined) {
      let tok = 0;
      while (cursor + out.length < order.length) {
        const n = this.samples[order[cursor + out.length]!]!.tokens.length;
        if (out.length > 0 && tok + n > this.opts.batchTokens) break;
        out.push(order[cursor + out.length]!);
        tok += n;
      }
      return out;
    }
    const bs = this.opts.batchSize ?? 1;
    return order.slice(cursor, cursor + bs) as number[];
  }

  /** Micro-batches in one epoch (depends on the order when batching by tokens). */
  microBatchesInEpoch(epoch: number): number {
    const order = this.epochOrder(epoch);
    let n = 0;
    for (let c = 0; c < order.length; n++) c += this.take(order, c).length;
    return n;
  }

  position(): DataPosition { return { epoch: this.epoch, cursor: this.cursor }; }

  restore(p: DataPosition): void {
    this.epoch = p.epoch;
    this.cursor = p.cursor;
    this.order = this.epochOrder(p.epoch);
    if (p.cursor > this.order.length) throw new Error(`data position ${p.cursor} is past the ${this.order.length} samples of the data: is this the same data file?`);
  }

  /** The next micro-batch (wrapping to the next epoch), with its sample indices. */
  next(): { batch: PackedBatch; indices: number[]; epoch: number } {
    if (this.cursor >= this.order.length) {
      this.epoch++;
      this.cursor = 0;
      this.order = this.epochOrder(this.epoch);
    }
    const epoch = this.epoch;
    const indices = this.take(this.order, this.cursor);
    this.cursor += indices.length;
    return { batch: packSamples(indices.map((i) => this.samples[i]!)), indices, epoch };
  }
}

/** Split off `fraction` of the samples (at least one, seeded) for validation. */
export function splitValidation(samples: readonly Sample[], fraction: number, seed: number): { train: Sample[]; eval: Sample[] } {
  if (!(fraction > 0 && fraction < 1)) throw new RangeError(`validation fraction must be in (0, 1), got ${fraction}`);
  if (samples.length < 2) throw new Error(`cannot split ${samples.length} sample(s) into training and validation`);
  const idx = new Rng(mix32(seed, 0xe7a1)).shuffle(samples.map((_, i) => i));
  const n = Math.min(samples.length - 1, Math.max(1, Math.round(fraction * samples.length)));
  const ev = new Set(idx.slice(0, n));
  return { train: samples.filter((_, i) => !ev.has(i)), eval: samples.filter((_, i) => ev.has(i)) };
}
