// Held-out loss and perplexity through the inference path: mean NLL over the tokens a record scores (all of BOS text EOS;
// completion / assistant tokens of the trainer's other formats).
import type { Tokenizer } from "../formats/tokenizer.js";
import { generate } from "../model/generate.js";
import type { LlamaModel } from "../model/llama.js";
import type { KvDType } from "../backend/backend.js";
import { encodeExample, type Sample } from "./data.js";

export interface HeldOutLoss {
  records: number;
  /** Scored tokens (a text record: its length - 1). */
  tokens: number;
  /** Mean negative log-likelihood per token, nats. */
  loss: number;
  perplexity: number;
}

export interface HeldOutOptions {
  /** Records are cut to this many tokens, as training truncates them. Default 256. */
  maxSeqLen?: number;
  /** Stop after this many predicted tokens in all. Default: every record. */
  maxTokens?: number;
  /** KV cache dtype of the inference path (default: the model's, see defaultKvDtype). */
  kvDtype?: KvDType;
}

/** Loss of `model` on `texts`, encoded as the trainer encodes {"text"} examples (BOS text EOS). */
export function heldOutLoss(model: LlamaModel, tok: Tokenizer, texts: readonly string[], opts: HeldOutOptions = {}): HeldOutLoss {
  const maxSeqLen = opts.maxSeqLen ?? 256;
  const samples = texts.map((text, i): Sample => {
    const { tokens, mask } = encodeExample({ kind: "text", text }, tok, null, { maxSeqLen }, `text ${i}`);
    return { tokens: Int32Array.from(tokens.slice(0, maxSeqLen)), mask: Uint8Array.from(mask.slice(0, maxSeqLen)), line: i + 1 };
  });
  return heldOutLossOfSamples(model, samples, opts);
}

/**
 * Loss of `model` on tokenized samples (the trainer's: see loadSamples) over the tokens their masks score, as the
 * trainer's eval scores them: position j of a sample counts when mask[j] = 1, predicted from tokens [0, j).
 * Samples are run as they are (truncate them first); maxTokens stops after that many scored tokens.
 */
export function heldOutLossOfSamples(model: LlamaModel, samples: readonly Sample[], opts: Pick<HeldOutOptions, "maxTokens" | "kvDtype"> = {}): HeldOutLoss {
  const budget = opts.maxTokens ?? Infinity;
  let nll = 0, tokens = 0, records = 0;
  for (const s of samples) {
    if (tokens >= budget) break;
    // the forward runs up to the last scored position within the budget (what follows it changes nothing)
    let n = 0, scored = 0;
    for (let j = 1; j < s.tokens.length && tokens + scored < budget; j++) {
      if (s.mask[j]) { scored++; n = j + 1; }
    }
    if (scored === 0) continue;
    const res = generate(model, Array.from(s.tokens.subarray(0, n)), { maxTokens: 0, promptLogprobs: 0, sampling: { temperature: 0 }, kvDtype: opts.kvDtype });
    const lps = res.promptLogprobs!;
    for (let j = 1; j < n; j++) if (s.mask[j]) nll -= lps[j]!.logprob;
    tokens += scored;
    records++;
  }
  if (tokens === 0) throw new Error("held-out loss: no record has a token to score");
  const loss = nll / tokens;
  return { records, tokens, loss, perplexity: Math.exp(loss) };
}
