// `floe eval`: perplexity of a model on a text file (JSONL {"text"} records or plain-text paragraphs) through the inference path.
import { readFileSync } from "node:fs";
import type { KvDType } from "../backend/backend.js";
import type { Tokenizer } from "../formats/tokenizer.js";
import type { LlamaModel } from "../model/llama.js";
import { withoutBom } from "./data.js";
import { heldOutLoss, type HeldOutLoss } from "./perplexity.js";

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
  let src: string;
  try {
    src = withoutBom(readFileSync(file, "utf8")); // a leading UTF-8 BOM, as the training data reader drops it
  } catch (e) {
    throw new Error(`${file}: cannot read eval data: ${(e as Error).message}`);
  }
  const lines = src.split("\n");
  const first = lines.find((l) => l.trim() !== "")?.trim();
  if (first === undefined) throw new Error(`${file}: eval data is empty`);
  if (!first.startsWith("{")) {
    // Windows (CRLF) and old Mac (CR) line ends read as LF, as Python's universal newlines do: blank lines split
    const paras = src.replace(/\r\n?/g, "\n").split(/\n[ \t]*\n/).map((p) => p.trim()).filter((p) => p !== "");
    return paras;
  }
  const texts: string[] = [];
  lines.forEach((line, i) => {
    if (line.trim() === "") return;
    let rec: unknown;
    try {
      rec = JSON.parse(line);
    } catch (e) {
      throw new Error(`${file}:${i + 1}: bad JSON: ${(e as Error).message}`);
    }
    const text = (rec as { text?: unknown } | null)?.text;
    if (typeof text !== "string") throw new Error(`${file}:${i + 1}: expected an object with a string "text" field`);
    texts.push(text);
  });
  return texts;
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
