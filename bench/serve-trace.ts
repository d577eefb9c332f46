// Serving benchmark data: the seeded request trace, per-request timing records and their summary statistics.

export interface TraceOptions {
  readonly numRequests: number;
  readonly promptMin: number; // prompt lengths uniform in [promptMin, promptMax]
  readonly promptMax: number;
  readonly outputMin: number; // output lengths uniform in [outputMin, outputMax]
  readonly outputMax: number;
  readonly rate: number; // mean arrivals per second (Poisson); Infinity: all at t = 0
  readonly arrivals?: 'poisson' | 'fixed'; // fixed: request i arrives at i / rate exactly (default poisson)
  readonly vocabSize: number;
  readonly seed: number;
}

export interface TraceRequest {
  readonly index: number;
  readonly arrivalS: number; // seconds after the start of the replay
  readonly prompt: readonly number[];
  readonly outputTokens: number; // generated exactly (ignore_eos)
}

/** Ids the bench vocabulary reserves (bos 256, eos 257): never put into prompts. */
const RESERVED = new Set([256, 257]);

/** mulberry32: a small seeded generator, uniform in [0, 1). */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The same options always give the same trace (lengths, arrivals and token ids). */
export function makeTrace(o: TraceOptions): TraceRequest[] {
  if (!(o.numRequests >= 1 && o.promptMin >= 1 && o.promptMax >= o.promptMin && o.outputMin >= 1 && o.outputMax >= o.outputMin && o.rate > 0)) {
    throw new Error(`bad trace options ${JSON.stringify(o)}: need requests >= 1, 1 <= promptMin <= promptMax, 1 <= outputMin <= outputMax, rate > 0`);
  }
  const rnd = seededRandom(o.seed);
  const int = (lo: number, hi: number): number => lo + Math.floor(rnd() * (hi - lo + 1));
  const out: TraceRequest[] = [];
  let t = 0;
  for (let i = 0; i < o.numRequests; i++) {
    if (i > 0 && Number.isFinite(o.rate)) {
      const gap = -Math.log(1 - rnd()) / o.rate; // drawn either way: a fixed trace has the Poisson trace's requests
      t = o.arrivals === 'fixed' ? i / o.rate : t + gap;
    }
    const P = int(o.promptMin, o.promptMax);
    const prompt: number[] = [];
    while (prompt.length < P) {
      const id = Math.floor(rnd() * o.vocabSize);
      if (!RESERVED.has(id)) prompt.push(id);
    }
    out.push({ index: i, arrivalS: t, prompt, outputTokens: int(o.outputMin, o.outputMax) });
  }
  return out;
}

/** Distinct prompts of one length for a burst of simultaneous streams (no shared prefix between them). */
export function burstPrompts(n: number, promptLen: number, vocabSize: number, seed: number): number[][] {
  return makeTrace({ numRequests: n, promptMin: promptLen, promptMax: promptLen, outputMin: 1, outputMax: 1, rate: 1, vocabSize, seed })
    .map((r) => [...r.prompt]);
}

/** Timing of one request as the client saw it; times in ms since the start of the replay. */
export interface RequestRecord {
  readonly index: number;
  readonly promptTokens: number;
  readonly sentMs: number;
  readonly firstTokenMs: number | null;
  readonly endMs: number;
  readonly outputTokens: number; // counted from the stream
  readonly tokenMs: readonly number[]; // arrival time of each output token
  readonly error: string | null;
}

export interface Dist {
  readonly mean: number;
  readonly p50: number;
  readonly p90: number;
  readonly p99: number;
  readonly max: number;
}

/** Percentile by linear interpolation between closest ranks. */
export function percentile(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return NaN;
  const pos = (sorted.length - 1) * q;
  const lo = Math.floor(pos), hi = Math.ceil(pos);
  return sorted[lo]! + (sorted[hi]! - sorted[lo]!) * (pos - lo);
}

export function dist(xs: readonly number[]): Dist | null {
  if (xs.length === 0) return null;
  const s = [...xs].sort((a, b) => a - b);
  return { mean: s.reduce((a, b) => a + b, 0) / s.length, p50: percentile(s, 0.5), p90: percentile(s, 0.9), p99: percentile(s, 0.99), max: s[s.length - 1]! };
}

export interface TraceSummary {
  readonly requests: number;
  readonly completed: number;
  readonly errors: number;
  readonly firstErrors: readonly string[];
  readonly shortOutputs: number; // completed with fewer tokens than the trace asked for
  readonly durationS: number; // first send to last end
  readonly outputTokens: number;
  readonly outputTps: number; // output tokens / duration
  readonly requestRate: number; // completed requests / duration
  readonly ttftMs: Dist | null;
  readonly tpotMs: Dist | null; // (e2e - ttft) / (outputs - 1), per request
  readonly itlMs: Dist | null; // gaps between consecutive tokens of a request
  readonly e2eMs: Dist | null;
}

export function summarize(trace: readonly TraceRequest[], recs: readonly RequestRecord[]): TraceSummary {
  const ok = recs.filter((r) => r.error === null && r.firstTokenMs !== null);
  const errs = recs.filter((r) => r.error !== null);
  const t0 = Math.min(...recs.map((r) => r.sentMs));
  const t1 = Math.max(...recs.map((r) => r.endMs));
  const durationS = (t1 - t0) / 1000;
  const outputTokens = ok.reduce((a, r) => a + r.outputTokens, 0);
  const itl: number[] = [];
  for (const r of ok) for (let i = 1; i < r.tokenMs.length; i++) itl.push(r.tokenMs[i]! - r.tokenMs[i - 1]!);
  return {
    requests: recs.length,
    completed: ok.length,
    errors: errs.length,
    firstErrors: [...new Set(errs.map((r) => r.error!))].slice(0, 3),
    shortOutputs: ok.filter((r) => r.outputTokens < trace[r.index]!.outputTokens).length,
    durationS,
    outputTokens,
    outputTps: outputTokens / durationS,
    requestRate: ok.length / durationS,
    ttftMs: dist(ok.map((r) => r.firstTokenMs! - r.sentMs)),
    tpotMs: dist(ok.filter((r) => r.outputTokens > 1).map((r) => (r.endMs - r.firstTokenMs!) / (r.outputTokens - 1))),
    itlMs: dist(itl),
    e2eMs: dist(ok.map((r) => r.endMs - r.sentMs)),
  };
}

/**
 * Aggregate decode rate of streams that run together: output tokens that arrived while every stream was past its
 * first token and none had finished, over that window's length. Null when the window holds fewer than 2 steps.
 */
export function steadyDecodeRate(recs: readonly RequestRecord[]): { tps: number; windowMs: number; tokens: number } | null {
  const live = recs.filter((r) => r.error === null && r.tokenMs.length >= 2);
  if (live.length === 0 || live.length < recs.length) return null;
  const start = Math.max(...live.map((r) => r.tokenMs[0]!));
  const end = Math.min(...live.map((r) => r.tokenMs[r.tokenMs.length - 1]!));
  if (!(end > start)) return null;
  // tokens in (start, end]: each was produced by a step that began after `start`
  let tokens = 0;
  for (const r of live) for (const t of r.tokenMs) if (t > start && t <= end) tokens++;
  if (tokens < 2 * live.length) return null;
  return { tps: tokens / ((end - start) / 1000), windowMs: end - start, tokens };
}

/** Decode rate of one stream: tokens after the first over the time they took. */
export function singleStreamRate(r: RequestRecord): number | null {
  if (r.error !== null || r.tokenMs.length < 2) return null;
  return (r.tokenMs.length - 1) / ((r.tokenMs[r.tokenMs.length - 1]! - r.tokenMs[0]!) / 1000);
}
