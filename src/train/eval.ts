// `floe eval`: perplexity of a model on a data file through the inference path: the trainer's JSONL formats ({"text"},
// {"prompt","completion"}, {"messages"}) scored on the tokens training scores, or plain-text paragraphs.
import { fileLines, type TextLine } from "../formats/lines.js";
import type { KvDType } from "../backend/backend.js";
import type { Tokenizer } from "../formats/tokenizer.js";
import type { LlamaModel } from "../model/llama.js";
import type { ChatTemplate } from "../formats/chat-template.js";
import { encodeSamples, parseJsonlLines, withoutBom, type EncodedSamples, type Example, type Sample } from "./data.js";
import { heldOutLoss, heldOutLossOfSamples, type HeldOutLoss } from "./perplexity.js";

export interface EvalOptions {
  /** Records are cut to this many tokens (BOS text EOS). Default: the model's context. */
  readonly maxSeqLen?: number;
  /** Stop after this many predicted tokens. Default: all. */
  readonly maxTokens?: number;
  readonly kvDtype?: KvDType;
}

export interface EvalResult extends HeldOutLoss {
  readonly kvDtype: KvDType | null; // null: the model's default
  readonly seconds: number;
}

/**
 * Texts of an eval file: JSONL lines with a string "text" field when the first non-empty line is a JSON object,
 * else plain text split into paragraphs at blank lines.
 */
export function readEvalTexts(file: string): string[] {
  return readEvalRecords(file).records.map(({ example, line }) => {
    if (example.kind !== "text") throw new Error(`${file}:${line}: expected an object with a string "text" field`);
    return example.text;
  });
}

export interface EvalDataOptions {
  /** Records are cut to this many tokens (as training cuts them to its --max-seq-len). */
  readonly maxSeqLen: number;
  /** Score prompt / user / system tokens too, as a run trained with trainOnPrompt did (default: completion / assistant tokens). */
  readonly trainOnPrompt?: boolean;
}

/** Records of an eval file, parsed (and checked, line by line) as the trainer parses a data or --eval file; see readEvalSamples. */
export function readEvalRecords(file: string): EvalRecords {
  // read line by line (a file past the longest string, ~512 MiB, reads too); a file system error is named as before
  const read = <T>(f: () => T): T => {
    try {
      return f();
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== undefined) throw new Error(`${file}: cannot read eval data: ${(e as Error).message}`);
      throw e;
    }
  };
  // JSONL when the first non-empty line (a leading UTF-8 BOM dropped, as the training data reader drops it) is an object
  const first = read(() => {
    for (const l of fileLines(file)) {
      const t = (l.number === 1 ? withoutBom(l.text) : l.text).trim();
      if (t !== "") return t;
    }
    return undefined;
  });
  if (first === undefined) throw new Error(`${file}: eval data is empty`);
  const records = first.startsWith("{") ? read(() => parseJsonlLines(fileLines(file), file))
    : read(() => paragraphs(fileLines(file))).map((text, i) => ({ example: { kind: "text" as const, text }, line: i + 1 }));
  return { file, records };
}

export interface EvalRecords {
  readonly file: string;
  readonly records: readonly { readonly example: Example; readonly line: number }[]; // line: a JSONL line, or a paragraph's number
}

/** Tokens and loss masks of parsed records, as loadSamples makes them for training (see readEvalSamples). */
export function encodeEvalRecords(data: EvalRecords, tok: Tokenizer, template: ChatTemplate | null, opts: EvalDataOptions): EncodedSamples {
  const r = encodeSamples(data.records, data.file, tok, template, opts);
  if (r.samples.length === 0) throw new Error(`${data.file}: no record has a token to score (after truncation to ${opts.maxSeqLen})`);
  return r;
}

/**
 * Tokens and loss masks of an eval file, as the trainer reads a data or --eval file: JSONL ({"text"}: every token of
 * BOS text EOS; {"prompt","completion"}: completion + EOS; {"messages"} through the chat template: assistant turns)
 * when its first non-empty line is a JSON object, else plain-text paragraphs (split at blank lines) read as {"text"}.
 */
export function readEvalSamples(file: string, tok: Tokenizer, template: ChatTemplate | null, opts: EvalDataOptions): EncodedSamples {
  return encodeEvalRecords(readEvalRecords(file), tok, template, opts);
}

/**
 * Paragraphs of plain text, split at blank lines (empty or spaces and tabs only), each trimmed. Windows (CRLF) and old
 * Mac (CR) line ends read as LF, as Python's universal newlines do. Gathered a line at a time.
 */
function paragraphs(lines: Iterable<TextLine>): string[] {
  const out: string[] = [];
  let cur: string[] = [];
  const end = () => {
    const p = cur.join("\n").trim();
    if (p !== "") out.push(p);
    cur = [];
  };
  for (const l of lines) {
    const text = l.number === 1 ? withoutBom(l.text) : l.text;
    // a '\r' ending the line is its CRLF's; any other '\r' ends a line of its own (old Mac)
    for (const part of (text.endsWith("\r") ? text.slice(0, -1) : text).split("\r")) {
      if (/^[ \t]*$/.test(part)) end();
      else cur.push(part);
    }
  }
  end();
  return out;
}

/** Token-weighted mean NLL of `model` over the tokens the samples' masks score (readEvalSamples); paged KV, chunked prefill. */
export function evalSamples(model: LlamaModel, samples: readonly Sample[], opts: Pick<EvalOptions, "maxTokens" | "kvDtype"> = {}): EvalResult {
  const t0 = performance.now();
  const r = heldOutLossOfSamples(model, samples, { maxTokens: opts.maxTokens, kvDtype: opts.kvDtype });
  return { ...r, kvDtype: opts.kvDtype ?? null, seconds: (performance.now() - t0) / 1000 };
}

/** Token-weighted mean NLL (and its exp, perplexity) of `model` over `texts`, each encoded BOS text EOS; paged KV, chunked prefill. */
export function evalPerplexity(model: LlamaModel, tok: Tokenizer, texts: readonly string[], opts: EvalOptions = {}): EvalResult {
  const maxSeqLen = opts.maxSeqLen ?? model.config.maxPositionEmbeddings;
  if (!(Number.isInteger(maxSeqLen) && maxSeqLen >= 2)) throw new RangeError(`max sequence length must be an integer >= 2, got ${maxSeqLen}`);
  if (maxSeqLen > model.config.maxPositionEmbeddings) {
    throw new RangeError(`max sequence length ${maxSeqLen} exceeds the model's context of ${model.config.maxPositionEmbeddings}`);
  }
  const t0 = performance.now();
  const r = heldOutLoss(model, tok, texts, { maxSeqLen, maxTokens: opts.maxTokens, kvDtype: opts.kvDtype });
  return { ...r, kvDtype: opts.kvDtype ?? null, seconds: (performance.now() - t0) / 1000 };
}
