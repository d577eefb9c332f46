// Load generator for an OpenAI-compatible server: streamed /v1/completions with token-id prompts, timed per token.

import * as http from 'node:http';
import type { RequestRecord, TraceRequest } from './serve-trace.js';

// node:http rather than fetch: no header or body timeouts (a queued request may wait minutes for its first token).
const AGENT = new http.Agent({ keepAlive: true, maxSockets: Infinity });

function post(url: string, body: string): Promise<http.IncomingMessage> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: 'POST', agent: AGENT, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } }, resolve);
    req.on('error', reject);
    req.end(body);
  });
}

export interface Target {
  readonly url: string; // e.g. http://127.0.0.1:8000
  readonly model: string;
}

/**
 * One streamed completion (greedy, ignore_eos, return_token_ids) of exactly `maxTokens` tokens; `t0` is the
 * replay's origin (performance.now() ms). Never throws: failures land in `error`.
 */
export async function streamCompletion(t: Target, index: number, prompt: readonly number[], maxTokens: number, t0: number): Promise<RequestRecord> {
  const sentMs = performance.now() - t0;
  const tokenMs: number[] = [];
  let error: string | null = null;
  let usageTokens: number | null = null;
  try {
    const res = await post(`${t.url}/v1/completions`, JSON.stringify({
      model: t.model, prompt, max_tokens: maxTokens, temperature: 0, stream: true,
      ignore_eos: true, return_token_ids: true, stream_options: { include_usage: true },
    }));
    if (res.statusCode !== 200) {
      let body = '';
      for await (const b of res) body += String(b);
      throw new Error(`HTTP ${res.statusCode}: ${body.slice(0, 300)}`);
    }
    const dec = new TextDecoder();
    let buf = '';
    for await (const bytes of res as AsyncIterable<Buffer>) {
      const now = performance.now() - t0;
      buf += dec.decode(bytes, { stream: true });
      let cut: number;
      while ((cut = buf.indexOf('\n\n')) >= 0) {
        const event = buf.slice(0, cut);
        buf = buf.slice(cut + 2);
        for (const line of event.split('\n')) {
          if (!line.startsWith('data: ')) continue;
          const data = line.slice(6);
          if (data === '[DONE]') continue;
          const msg = JSON.parse(data) as {
            error?: { message: string };
            choices?: Array<{ token_ids?: number[] }>;
            usage?: { completion_tokens: number } | null;
          };
          if (msg.error) throw new Error(`stream error: ${msg.error.message}`);
          for (const ch of msg.choices ?? []) for (let i = 0; i < (ch.token_ids?.length ?? 0); i++) tokenMs.push(now);
          if (msg.usage) usageTokens = msg.usage.completion_tokens;
        }
      }
    }
    if (usageTokens !== null && usageTokens !== tokenMs.length) {
      throw new Error(`usage says ${usageTokens} completion tokens, the stream carried ${tokenMs.length} token ids`);
    }
  } catch (e) {
    error = (e as Error).message;
  }
  return {
    index, promptTokens: prompt.length, sentMs, firstTokenMs: tokenMs[0] ?? null, endMs: performance.now() - t0,
    outputTokens: tokenMs.length, tokenMs, error,
  };
}

/** Sends every trace request at its arrival time (open loop) and waits for all of them. */
export async function replayTrace(t: Target, trace: readonly TraceRequest[]): Promise<RequestRecord[]> {
  const t0 = performance.now();
  return Promise.all(trace.map((r) => new Promise<RequestRecord>((resolve) => {
    const wait = Math.max(0, r.arrivalS * 1000 - (performance.now() - t0));
    setTimeout(() => { void streamCompletion(t, r.index, r.prompt, r.outputTokens, t0).then(resolve); }, wait);
  })));
}

/** All prompts at once, each for `maxTokens` tokens. */
export async function burst(t: Target, prompts: readonly (readonly number[])[], maxTokens: number): Promise<RequestRecord[]> {
  const t0 = performance.now();
  return Promise.all(prompts.map((p, i) => streamCompletion(t, i, p, maxTokens, t0)));
}

/** Polls GET /health until it answers 200 (the model is loaded), or throws after `timeoutMs`. */
export async function waitHealthy(url: string, timeoutMs: number, alive: () => string | null): Promise<void> {
  const end = performance.now() + timeoutMs;
  for (;;) {
    const dead = alive();
    if (dead !== null) throw new Error(dead);
    try {
      const r = await fetch(`${url}/health`);
      await r.body?.cancel();
      if (r.status === 200) return;
    } catch { /* not listening yet */ }
    if (performance.now() > end) throw new Error(`${url}/health did not answer 200 within ${timeoutMs / 1000} s`);
    await new Promise((r) => setTimeout(r, 250));
  }
}
