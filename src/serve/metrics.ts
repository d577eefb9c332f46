// Prometheus metrics for the server (prom-client, own registry): HTTP requests, tokens, latencies and engine gauges.

import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { EngineStats } from '../engine/protocol.js';

const LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80];

export class ServeMetrics {
  readonly registry = new Registry();
  readonly requests: Counter<'route' | 'status'>;
  readonly promptTokens: Counter;
  readonly cachedPromptTokens: Counter;
  readonly generationTokens: Counter;
  readonly ttft: Histogram;
  readonly itl: Histogram;
  readonly e2e: Histogram;
  readonly aborted: Counter;
  private readonly gauges: Record<'running' | 'waiting' | 'kvTotal' | 'kvUsed' | 'kvCached' | 'kvUsage' | 'hitRate' | 'specAcceptance' | 'specPerStep'
    | 'specRow' | 'specJump' | 'specPrompt' | 'specDraftToken' | 'specPooled' | 'specPaused', Gauge>;
  // Engine totals mirrored into counters: each scrape adds the increase since the last.
  private readonly loraInfo: Gauge<'running_lora_adapters' | 'waiting_lora_adapters' | 'max_lora'>;
  private readonly mirrored: Array<{ counter: Counter; read: (s: EngineStats) => number; last: number }>;

  constructor(opts: { processMetrics?: boolean } = {}) {
    const r = [this.registry];
    if (opts.processMetrics) collectDefaultMetrics({ register: this.registry, prefix: 'floe_' });
    this.requests = new Counter({ name: 'floe_http_requests_total', help: 'HTTP requests by route and status', labelNames: ['route', 'status'], registers: r });
    this.promptTokens = new Counter({ name: 'floe_prompt_tokens_total', help: 'Prompt tokens of finished requests', registers: r });
    this.cachedPromptTokens = new Counter({ name: 'floe_prompt_tokens_cached_total', help: 'Prompt tokens served from the prefix cache', registers: r });
    this.generationTokens = new Counter({ name: 'floe_generation_tokens_total', help: 'Generated tokens streamed or returned', registers: r });
    this.ttft = new Histogram({ name: 'floe_time_to_first_token_seconds', help: 'Time from request arrival to the first generated token', buckets: LATENCY_BUCKETS, registers: r });
    this.itl = new Histogram({ name: 'floe_inter_token_latency_seconds', help: 'Time between successive generated tokens of one completion', buckets: LATENCY_BUCKETS, registers: r });
    this.e2e = new Histogram({ name: 'floe_e2e_request_latency_seconds', help: 'Time from request arrival to its last token', buckets: LATENCY_BUCKETS, registers: r });
    this.aborted = new Counter({ name: 'floe_requests_aborted_total', help: 'Generation and embedding requests aborted because the client went away', registers: r });
    const g = (name: string, help: string) => new Gauge({ name, help, registers: r });
    this.gauges = {
      running: g('floe_num_requests_running', 'Requests in the running batch'),
      waiting: g('floe_num_requests_waiting', 'Requests waiting in the queue'),
      kvTotal: g('floe_kv_blocks_total', 'KV cache blocks in the pool'),
      kvUsed: g('floe_kv_blocks_used', 'KV cache blocks owned by requests'),
      kvCached: g('floe_kv_blocks_cached', 'Free KV cache blocks still holding reusable prefixes'),
      kvUsage: g('floe_kv_cache_usage_ratio', 'Fraction of KV cache blocks in use'),
      hitRate: g('floe_prefix_cache_hit_rate', 'Prompt tokens served from the prefix cache / prompt tokens looked up'),
      specAcceptance: g('floe_spec_decode_acceptance_rate', 'Speculative decoding: accepted draft tokens / proposed draft tokens'),
      specPerStep: g('floe_spec_decode_draft_tokens_per_step', 'Speculative decoding: mean draft tokens verified per sequence step'),
      specRow: g('floe_spec_decode_row_seconds', 'Speculative decoding, measured: seconds a verify row adds to a step'),
      specPrompt: g('floe_spec_decode_prompt_token_seconds', 'Speculative decoding, measured: seconds a prompt token (chunked prefill in a decode step) adds to a step'),
      specJump: g('floe_spec_decode_jump_seconds', 'Speculative decoding, measured: seconds a drafting sequence adds to a step besides its rows'),
      specDraftToken: g('floe_spec_decode_proposer_seconds_per_token', 'Speculative decoding, measured: proposer seconds per draft token'),
      specPooled: g('floe_spec_decode_pooled_acceptance', 'Speculative decoding: acceptance per draft position pooled over recent sequences (new sequences start from it)'),
      specPaused: g('floe_spec_decode_paused_sequences', 'Speculative decoding: running sequences whose drafts are paused (they did not pay, or kept failing)'),
    };
    // vLLM's lora_requests_info: one series, the adapters in use as labels, its value the time it was taken
    this.loraInfo = new Gauge({ name: 'floe_lora_requests_info', help: 'LoRA adapters of running and waiting requests (comma-separated names; value: unix time of the reading)', labelNames: ['running_lora_adapters', 'waiting_lora_adapters', 'max_lora'], registers: r });
    const c = (name: string, help: string, read: (s: EngineStats) => number) =>
      ({ counter: new Counter({ name, help, registers: r }), read, last: 0 });
    this.mirrored = [
      c('floe_prefix_cache_queries_total', 'Prompt tokens looked up in the prefix cache', (s) => s.prefixQueriedTokens),
      c('floe_prefix_cache_hits_total', 'Prompt tokens found in the prefix cache', (s) => s.prefixHitTokens),
      c('floe_num_preemptions_total', 'Requests preempted for lack of KV blocks', (s) => s.preemptions),
      c('floe_num_swapped_out_total', 'Preempted requests whose KV was swapped out (resumed without recompute; --swap-space)', (s) => s.swappedOut ?? 0),
      c('floe_engine_prompt_tokens_total', 'Prompt tokens computed by the engine', (s) => s.promptTokens),
      c('floe_engine_generation_tokens_total', 'Tokens generated by the engine', (s) => s.generatedTokens),
      c('floe_engine_steps_total', 'Engine steps', (s) => s.steps),
      c('floe_spec_decode_num_draft_tokens_total', 'Speculative decoding: draft tokens proposed and verified', (s) => s.specDraftTokens ?? 0),
      c('floe_spec_decode_num_accepted_tokens_total', 'Speculative decoding: draft tokens accepted', (s) => s.specAcceptedTokens ?? 0),
      c('floe_spec_decode_num_steps_total', 'Speculative decoding: sequence steps that verified a draft', (s) => s.specSteps ?? 0),
    ];
  }

  /** Copy engine stats into the gauges and mirrored counters (called before each scrape). */
  update(s: EngineStats): void {
    const g = this.gauges;
    g.running.set(s.running);
    g.waiting.set(s.waiting);
    g.kvTotal.set(s.kvBlocksTotal);
    g.kvUsed.set(s.kvBlocksUsed);
    g.kvCached.set(s.kvBlocksCached);
    g.kvUsage.set(s.kvBlocksTotal > 0 ? s.kvBlocksUsed / s.kvBlocksTotal : 0);
    g.hitRate.set(s.prefixQueriedTokens > 0 ? s.prefixHitTokens / s.prefixQueriedTokens : 0);
    const drafted = s.specDraftTokens ?? 0;
    g.specAcceptance.set(drafted > 0 ? (s.specAcceptedTokens ?? 0) / drafted : 0);
    g.specPerStep.set((s.specSteps ?? 0) > 0 ? drafted / s.specSteps! : 0);
    const sc = s.specCosts;
    if (sc) {
      g.specRow.set(sc.rowSeconds);
      g.specJump.set(sc.jumpSeconds);
      g.specPrompt.set(sc.promptTokenSeconds);
      g.specDraftToken.set(sc.draftTokenSeconds);
      if (sc.pooledAcceptance !== null) g.specPooled.set(sc.pooledAcceptance);
      g.specPaused.set(sc.pausedSeqs);
    }
    if (s.loraRunning !== undefined && s.loraWaiting !== undefined && s.maxLoras !== undefined) {
      this.loraInfo.reset();
      this.loraInfo.set({ running_lora_adapters: s.loraRunning.join(','), waiting_lora_adapters: s.loraWaiting.join(','), max_lora: String(s.maxLoras) }, Date.now() / 1000);
    }
    for (const m of this.mirrored) {
      const v = m.read(s);
      if (v > m.last) m.counter.inc(v - m.last);
      m.last = v;
    }
  }

  async text(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}
