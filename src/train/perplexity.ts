// Held-out loss and perplexity through the inference path: BOS text EOS per record, mean NLL over the predicted tokens.
import type { Tokenizer } from "../formats/tokenizer.js";
import { generate } from "../model/generate.js";
import type { LlamaModel } from "../model/llama.js";
import type { KvDType } from "../backend/backend.js";

export interface HeldOutLoss {
  records: number;
  /** Predicted tokens (each record contributes its length - 1). */
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
  const budget = opts.maxTokens ?? Infinity;
  const eos = tok.eosIds[0];
  let nll = 0, tokens = 0, records = 0;
  for (const text of texts) {
    if (tokens >= budget) break;
    const ids = tok.encode(text, { addSpecialTokens: true });
    if (eos !== undefined) ids.push(eos);
    const n = Math.min(ids.length, maxSeqLen, budget - tokens + 1);
    if (n < 2) continue;
    const res = generate(model, ids.slice(0, n), { maxTokens: 0, promptLogprobs: 0, sampling: { temperature: 0 }, kvDtype: opts.kvDtype });
    const lps = res.promptLogprobs!;
    for (let i = 1; i < n; i++) nll -= lps[i]!.logprob;
    tokens += n - 1;
    records++;
  }
  if (tokens === 0) throw new Error("held-out loss: no record has two or more tokens");
  const loss = nll / tokens;
  return { records, tokens, loss, perplexity: Math.exp(loss) };
}
