// Synth's view of a model: chat and raw-text completions, in-process on floe's engine or over an OpenAI-compatible endpoint.

import type { ChatMessage, ChatTemplate } from '../../formats/chat-template.js';
import { encodeChat } from '../../formats/chat-template.js';
import type { Tokenizer } from '../../formats/tokenizer.js';
import type { EngineClient, EngineStats, SamplingSpec } from '../../engine/protocol.js';
import { DEFAULT_SAMPLING } from '../../model/sampler.js';

export interface GenOptions {
  readonly maxTokens: number;
  readonly temperature: number;
  readonly topP: number;
  readonly seed: number; // per request: the same seed and prompt give the same text
  readonly stop?: readonly string[];
}

export interface Gen {
  readonly text: string;
  readonly finish: 'stop' | 'length' | 'abort';
  readonly promptTokens: number;
  readonly completionTokens: number;
  readonly cachedTokens?: number; // prompt tokens the server took from its prefix cache (when it says)
}

/** What a synth method needs from a model. */
export interface SynthLlm {
  readonly name: string; // model id, kept in provenance
  chat(messages: readonly ChatMessage[], opts: GenOptions): Promise<Gen>;
  /** Continue raw text (special tokens written out as text, e.g. a chat template's open user header). */
  complete(prompt: string, opts: GenOptions): Promise<Gen>;
  /** The chat template rendered up to the opening of a user turn (Magpie), or null without a template. */
  openUserTurn(system?: string): string | null;
  /** Engine counters (in-process only): for in-flight checks and benchmarks. */
  stats?(): Promise<EngineStats>;
  /** log p(response | messages) summed over the response's tokens, as the chat template frames an assistant turn. */
  logprob?(messages: readonly ChatMessage[], response: string): Promise<{ logprob: number; tokens: number }>;
}

/** A request that does not fit the model's context (its prompt, or prompt + max tokens over an endpoint): the pipeline
 *  rejects that unit as `context_length_exceeded` and goes on, in-process and over an endpoint alike. */
export class ContextLengthExceeded extends Error {}

const MARK = '\u0000floe-synth-user\u0000';

/** Render [system?, user MARK] and cut at MARK: the template's text up to the open user header. */
export function openUserTurnOf(template: ChatTemplate, bos: string, eos: string, system?: string): string {
  const msgs: ChatMessage[] = [...(system ? [{ role: 'system', content: system }] : []), { role: 'user', content: MARK }];
  const text = template.render(msgs, { bosToken: bos, eosToken: eos });
  const at = text.indexOf(MARK);
  if (at < 0) throw new Error(`${template.origin}: the rendered template does not contain the user message; cannot find the open user header for Magpie`);
  return text.slice(0, at);
}

function sampling(o: GenOptions): SamplingSpec {
  return { ...DEFAULT_SAMPLING, temperature: o.temperature, topP: o.topP, seed: o.seed, logitBias: null };
}

/** floe's engine in this process (worker thread): every call is one request; concurrent calls batch continuously. */
export class EngineLlm implements SynthLlm {
  private next = 0;
  constructor(readonly engine: EngineClient, readonly tokenizer: Tokenizer, readonly template: ChatTemplate | null, readonly name: string) {}

  async chat(messages: readonly ChatMessage[], opts: GenOptions): Promise<Gen> {
    if (!this.template) throw new Error(`${this.name} has no chat template; synth methods need one (tokenizer_config.json chat_template)`);
    return this.run(encodeChat(this.tokenizer, this.template, messages, { addGenerationPrompt: true }), opts);
  }

  async complete(prompt: string, opts: GenOptions): Promise<Gen> {
    return this.run(this.tokenizer.encode(prompt, { addSpecialTokens: false }), opts);
  }

  openUserTurn(system?: string): string | null {
    return this.template ? openUserTurnOf(this.template, this.tokenizer.bosToken ?? '', this.tokenizer.eosToken ?? '', system) : null;
  }

  stats(): Promise<EngineStats> { return this.engine.stats(); }

  async logprob(messages: readonly ChatMessage[], response: string): Promise<{ logprob: number; tokens: number }> {
    if (!this.template) throw new Error(`${this.name} has no chat template; scoring an answer needs one`);
    const prompt = encodeChat(this.tokenizer, this.template, messages, { addGenerationPrompt: true });
    const answer = this.tokenizer.encode(response, { addSpecialTokens: false });
    const ids = [...prompt, ...answer];
    if (ids.length + 1 > this.engine.info.maxRequestTokens) throw new ContextLengthExceeded(`scoring: ${ids.length} tokens exceed the engine's ${this.engine.info.maxRequestTokens - 1}-token limit`);
    let lp: readonly ({ logprob: number } | null)[] | null = null;
    // one sampled token is the least the engine runs; prompt_logprobs = 0 gives each prompt token's own log-probability
    for await (const out of this.engine.generate({
      id: `synth-score-${process.pid}-${this.next++}`, promptIds: ids, sampling: sampling({ maxTokens: 1, temperature: 0, topP: 1, seed: 0 }), maxTokens: 1, n: 1,
      stop: [], stopTokenIds: [], ignoreEos: true, logprobs: null, promptLogprobs: 0, skipSpecialTokens: true, priority: 'batch',
    })) lp ??= out.promptLogprobs;
    if (!lp || lp.length !== ids.length) throw new Error(`scoring: the engine returned ${lp?.length ?? 0} prompt log-probabilities for ${ids.length} tokens`);
    let sum = 0;
    for (let i = prompt.length; i < ids.length; i++) sum += lp[i]!.logprob;
    return { logprob: sum, tokens: answer.length };
  }

  private async run(promptIds: number[], o: GenOptions): Promise<Gen> {
    const room = this.engine.info.maxRequestTokens - promptIds.length;
    if (room < 1) throw new ContextLengthExceeded(`a ${promptIds.length}-token prompt leaves no room in the engine's ${this.engine.info.maxRequestTokens}-token limit`);
    let text = '';
    let finish: Gen['finish'] = 'abort';
    let completionTokens = 0;
    let cachedTokens = 0;
    for await (const out of this.engine.generate({
      id: `synth-${process.pid}-${this.next++}`, promptIds, sampling: sampling(o), maxTokens: Math.min(o.maxTokens, room), n: 1,
      stop: o.stop ?? [], stopTokenIds: [], ignoreEos: false, logprobs: null, promptLogprobs: null, skipSpecialTokens: true, priority: 'batch',
    })) {
      text += out.text;
      completionTokens = out.usage.completionTokens;
      cachedTokens = out.usage.cachedTokens;
      if (out.finishReason) finish = out.finishReason;
    }
    return { text, finish, promptTokens: promptIds.length, completionTokens, cachedTokens };
  }
}

export interface EndpointOptions {
  readonly url: string; // base URL, e.g. http://host:8000/v1 (a trailing /v1 is added when missing)
  readonly apiKey?: string;
  readonly model?: string; // default: the first id of GET /models
  /** Local template (and tokenizer strings) for Magpie's open user header; endpoints do not expose theirs. */
  readonly template?: ChatTemplate | null;
  readonly bos?: string;
  readonly eos?: string;
  readonly retries?: number; // on 429 / 5xx / network errors; default 5
}

/** Any OpenAI-compatible server (floe serve, vLLM, a hosted teacher) through fetch. */
export class EndpointLlm implements SynthLlm {
  private constructor(private readonly base: string, readonly name: string, private readonly o: EndpointOptions) {}

  static async open(o: EndpointOptions): Promise<EndpointLlm> {
    const base = o.url.replace(/\/+$/, '').replace(/(?<!\/v1)$/, '/v1');
    let model = o.model;
    if (!model) {
      const r = await call(base, 'GET', '/models', o.apiKey, undefined, o.retries ?? 5) as { data?: { id?: string }[] };
      model = r.data?.[0]?.id;
      if (!model) throw new Error(`${base}/models lists no model; give --endpoint-model NAME`);
    }
    return new EndpointLlm(base, model, o);
  }

  async chat(messages: readonly ChatMessage[], opts: GenOptions): Promise<Gen> {
    const r = await call(this.base, 'POST', '/chat/completions', this.o.apiKey, { model: this.name, messages, ...this.body(opts) }, this.o.retries ?? 5) as ChatAnswer;
    return gen(r, r.choices?.[0]?.message?.content);
  }

  async complete(prompt: string, opts: GenOptions): Promise<Gen> {
    // the server's tokenizer adds BOS itself
    const p = this.o.bos && prompt.startsWith(this.o.bos) ? prompt.slice(this.o.bos.length) : prompt;
    const r = await call(this.base, 'POST', '/completions', this.o.apiKey, { model: this.name, prompt: p, ...this.body(opts) }, this.o.retries ?? 5) as ChatAnswer;
    return gen(r, r.choices?.[0]?.text);
  }

  openUserTurn(system?: string): string | null {
    return this.o.template ? openUserTurnOf(this.o.template, this.o.bos ?? '', this.o.eos ?? '', system) : null;
  }

  /** Through /completions with echo and logprobs (OpenAI legacy, floe serve, vLLM): the answer's tokens are those the
   *  server's text offsets place inside it. Needs the local chat template (EndpointOptions.template). */
  async logprob(messages: readonly ChatMessage[], response: string): Promise<{ logprob: number; tokens: number }> {
    const t = this.o.template;
    if (!t) throw new Error(`${this.name}: scoring an answer over an endpoint needs the model's chat template (give the model directory for it)`);
    let prompt = t.render(messages, { addGenerationPrompt: true, bosToken: this.o.bos ?? '', eosToken: this.o.eos ?? '' });
    if (this.o.bos && prompt.startsWith(this.o.bos)) prompt = prompt.slice(this.o.bos.length); // the server adds it
    const r = await call(this.base, 'POST', '/completions', this.o.apiKey, {
      model: this.name, prompt: prompt + response, max_tokens: 1, temperature: 0, echo: true, logprobs: 0,
    }, this.o.retries ?? 5) as { choices?: { logprobs?: { token_logprobs?: (number | null)[]; text_offset?: number[] } }[] };
    const lp = r.choices?.[0]?.logprobs;
    if (!lp?.token_logprobs || !lp.text_offset) throw new Error(`${this.base}/completions returned no echoed logprobs; this endpoint cannot score answers`);
    let sum = 0, tokens = 0;
    const end = prompt.length + response.length;
    lp.text_offset.forEach((off, i) => {
      if (off < prompt.length || off >= end) return;
      const x = lp.token_logprobs![i];
      if (typeof x !== 'number') throw new Error(`${this.base}/completions: no logprob for the answer token at offset ${off}`);
      sum += x;
      tokens++;
    });
    if (tokens === 0) throw new Error(`${this.base}/completions: no echoed token lies in the answer`);
    return { logprob: sum, tokens };
  }

  private body(o: GenOptions): Record<string, unknown> {
    return { max_tokens: o.maxTokens, temperature: o.temperature, top_p: o.topP, seed: o.seed, ...(o.stop?.length ? { stop: o.stop } : {}) };
  }
}

interface ChatAnswer {
  choices?: { message?: { content?: string | null }; text?: string; finish_reason?: string }[];
  usage?: { prompt_tokens?: number; completion_tokens?: number; prompt_tokens_details?: { cached_tokens?: number } | null };
}

function gen(r: ChatAnswer, text: string | null | undefined): Gen {
  const f = r.choices?.[0]?.finish_reason;
  return { text: text ?? '', finish: f === 'length' ? 'length' : f === 'stop' ? 'stop' : 'abort', promptTokens: r.usage?.prompt_tokens ?? 0, completionTokens: r.usage?.completion_tokens ?? 0,
    cachedTokens: r.usage?.prompt_tokens_details?.cached_tokens ?? undefined };
}

async function call(base: string, method: string, path: string, apiKey: string | undefined, body: unknown, retries: number): Promise<unknown> {
  const headers: Record<string, string> = { 'content-type': 'application/json', ...(apiKey ? { authorization: `Bearer ${apiKey}` } : {}) };
  for (let attempt = 0; ; attempt++) {
    let res: Response;
    try {
      res = await fetch(base + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    } catch (e) {
      if (attempt < retries) { await sleep(250 * 2 ** attempt); continue; }
      // fetch's own message is "fetch failed"; the reason (ECONNREFUSED, a DNS failure, a reset) is in its cause
      const cause = (e as { cause?: { code?: string; message?: string } }).cause;
      const why = cause?.message || cause?.code ? `: ${cause.message || cause.code}` : '';
      throw new Error(`${method} ${base}${path}: ${(e as Error).message}${why} (after ${retries + 1} attempts)`);
    }
    const text = await res.text();
    if (res.ok) {
      try { return JSON.parse(text); } catch { throw new Error(`${method} ${base}${path}: HTTP ${res.status} but the body is not JSON: ${text.slice(0, 200)}`); }
    }
    if ((res.status === 429 || res.status >= 500) && attempt < retries) { await sleep(250 * 2 ** attempt); continue; }
    const msg = `${method} ${base}${path}: HTTP ${res.status}: ${text.slice(0, 500)}`;
    // OpenAI and floe serve say code context_length_exceeded, vLLM only its message: one unit's request, not the run's
    if (res.status === 400 && /context_length_exceeded|maximum context length/i.test(text)) throw new ContextLengthExceeded(msg);
    throw new Error(msg);
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
