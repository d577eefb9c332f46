// OpenAI's Responses API: POST /v1/responses (plain and streamed as typed events) on the chat-completions path, and
// with a data dir the stored responses: GET / DELETE /v1/responses/{id}, GET …/{id}/input_items, previous_response_id.

import { pageOf, queryOnce } from './paging.js';
import { randomBytes } from 'node:crypto';
import type { FastifyInstance, FastifyReply } from 'fastify';
import type { EngineClient, GenerateOutput, LogprobEntry } from '../engine/protocol.js';
import { ResponseStore } from '../platform/response-store.js';
import type { Store } from '../platform/store.js';
import type { ModelContext } from './app.js';
import { hookHeaders } from './cors.js';
import { ApiError, invalid } from './errors.js';
import type { Rails } from './guard-routes.js';
import { parseResponsesRequest, type ResponseItem, type ResponsesParams } from './responses-request.js';
import { ToolCallStream } from './tool-calls.js';
import type { ChatParams, ValidationContext } from './validate.js';

type Job = { stream: AsyncGenerator<{ source: number; value: GenerateOutput }>; abort: () => void; aborted: () => boolean };
type Usage = { prompt_tokens: number; completion_tokens: number; prompt_tokens_details: { cached_tokens: number } };
type Event = Record<string, unknown> & { type: string };

/** What the route takes from the app: the chat-completions path and its helpers. */
export interface ResponsesDeps {
  readonly model: () => ModelContext;
  readonly vctx: (c: ModelContext) => ValidationContext;
  readonly tracked: <T>(fn: () => Promise<T>) => Promise<T>;
  readonly noteIgnored: (reply: FastifyReply, fields: readonly string[]) => void;
  readonly chatPrompt: (c: ModelContext, p: ChatParams, param: string) => { ids: number[]; useTools: boolean; toolNames: ReadonlySet<string>; forced: boolean; maxCalls: number };
  readonly budget: (c: ModelContext, p: ChatParams, len: number, param: string) => number;
  readonly chatJob: (reply: FastifyReply, p: ChatParams, rails: Rails | null, id: string, ids: number[], maxTokens: number) => Promise<Job>;
  readonly drain: (job: Job, onItem: (item: { source: number; value: GenerateOutput }) => void) => Promise<void>;
  readonly logprobContent: (entries: readonly LogprobEntry[]) => unknown[];
  readonly rails: (body: unknown) => Rails | null; // takes `guardrails` off the body
  readonly serveJobModel: (model: unknown, engine: EngineClient) => Promise<void>;
  readonly accumulator: (t0: number) => { add(source: number, o: GenerateOutput): number; done(): void; usage(): Usage };
  readonly apiError: (err: unknown) => ApiError;
  readonly store: (() => Store) | null; // null: no data dir, nothing stored
}

const hex = (n: number) => randomBytes(n).toString('hex');

export function registerResponsesRoutes(app: FastifyInstance, d: ResponsesDeps): void {
  let responses: ResponseStore | null = null;
  const store = (): ResponseStore | null => (d.store ? (responses ??= new ResponseStore(d.store().db)) : null);
  const stored = (id: string) => {
    const s = store();
    if (!s) throw new ApiError(404, `no response '${id.slice(0, 100)}': this server stores no responses (started with --no-batch)`, null, 'not_found');
    const r = s.get(id);
    if (!r) throw new ApiError(404, `no response with id '${id.slice(0, 100)}'`, null, 'not_found');
    return r;
  };

  app.post('/v1/responses', (req, reply) => d.tracked(async () => {
    const c = d.model();
    const rails = d.rails(req.body);
    await d.serveJobModel((req.body as { model?: unknown } | null)?.model, c.engine);
    const s = store();
    const previous = s && ((id: string) => {
      const r = s.get(id);
      if (!r) throw new ApiError(404, `'previous_response_id' names no stored response: '${id.slice(0, 100)}'`, 'previous_response_id', 'previous_response_not_found');
      return { history: r.history as ResponseItem[], output: r.response.output as ResponseItem[] };
    });
    const p = parseResponsesRequest(req.body, d.vctx(c), previous);
    d.noteIgnored(reply, [...new Set([...p.ignored, ...p.chat.ignored])]);
    const tools = d.chatPrompt(c, p.chat, 'input');
    const maxTokens = d.budget(c, p.chat, tools.ids.length, 'input');
    const id = `resp_${hex(24)}`;
    const t0 = performance.now();
    const createdAt = Math.floor(Date.now() / 1000);
    const job = await d.chatJob(reply, p.chat, rails, id, tools.ids, maxTokens);
    const acc = d.accumulator(t0);
    const keep = s !== null && p.store;
    let finish: string | null = null;
    const obj = (status: string, output: ResponseItem[], usage: Usage | null, error: { code: string; message: string } | null = null) =>
      responseObject(id, createdAt, status, p, output, usage, finish, error, keep, rails);
    const onOutput = (b: OutputBuilder, o: GenerateOutput) => {
      acc.add(0, o);
      if (o.finishReason !== null) finish = o.finishReason;
      b.push(o);
    };
    const final = (b: OutputBuilder) => {
      acc.done();
      b.finish(finish !== 'stop');
      const r = obj(finish === 'stop' ? 'completed' : 'incomplete', b.output, acc.usage());
      // a response its client left (no finish reason) is not kept: it would read as cut by max_output_tokens, as on chat
      if (keep && finish !== null && !reply.raw.destroyed) s.put({ id, response: r, input: p.items, history: p.history });
      return r;
    };
    const builder = (emit: (e: Event) => void) =>
      new OutputBuilder(tools.useTools ? new ToolCallStream(tools.toolNames, tools.forced, tools.maxCalls) : null, p.topLogprobs !== null ? d.logprobContent : null, emit);

    if (!p.chat.stream) {
      const b = builder(() => {});
      await d.drain(job, ({ value }) => onOutput(b, value));
      return final(b);
    }

    // Streamed: wait for the first output so that a refusal (429, 400) still gets its status, then typed events.
    const it = job.stream;
    let first: IteratorResult<{ source: number; value: GenerateOutput }>;
    try {
      first = await it.next();
    } catch (err) {
      job.abort();
      throw err;
    }
    reply.hijack();
    const raw = reply.raw;
    raw.writeHead(200, { ...hookHeaders(reply), 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', connection: 'keep-alive', 'x-accel-buffering': 'no' });
    let seq = 0;
    const send = (e: Event) => {
      if (!raw.destroyed && !raw.writableEnded) raw.write(`event: ${e.type}\ndata: ${JSON.stringify({ ...e, sequence_number: seq++ })}\n\n`);
    };
    const b = builder(send);
    try {
      send({ type: 'response.created', response: obj('in_progress', [], null) });
      send({ type: 'response.in_progress', response: obj('in_progress', [], null) });
      if (!first.done) onOutput(b, first.value.value);
      for (let r = await it.next(); !r.done; r = await it.next()) {
        if (raw.destroyed) break;
        onOutput(b, r.value.value);
      }
      if (!raw.destroyed) {
        const r = final(b);
        send({ type: r.status === 'completed' ? 'response.completed' : 'response.incomplete', response: r });
      } else {
        acc.done(); // the client left: what was computed and streamed still counts, as on chat
      }
    } catch (err) {
      job.abort();
      const e = d.apiError(err);
      send({ type: 'error', code: e.code, message: e.message, param: e.param });
      send({ type: 'response.failed', response: obj('failed', b.output, null, { code: e.status === 429 ? 'rate_limit_exceeded' : 'server_error', message: e.message }) });
    } finally {
      void it.return(undefined).catch(() => {});
      if (!raw.destroyed && !raw.writableEnded) raw.end();
    }
    return reply;
  }));

  app.get<{ Params: { id: string }; Querystring: Record<string, string> }>('/v1/responses/:id', async (req) => {
    if (req.query.stream === 'true') throw invalid('stream', `'stream' on a stored response is not supported: it finished; GET it without 'stream'`, 'unsupported_parameter');
    return stored(req.params.id).response;
  });

  app.delete<{ Params: { id: string } }>('/v1/responses/:id', async (req) => {
    stored(req.params.id);
    store()!.delete(req.params.id);
    return { id: req.params.id, object: 'response.deleted', deleted: true };
  });

  app.get<{ Params: { id: string }; Querystring: Record<string, string> }>('/v1/responses/:id/input_items', async (req) => {
    const r = stored(req.params.id);
    const q = queryOnce(req.query, ['order', 'limit', 'after']);
    const order = q.order ?? 'desc';
    if (order !== 'asc' && order !== 'desc') throw invalid('order', `'order' must be "asc" or "desc", got ${JSON.stringify(order).slice(0, 40)}`);
    const limit = q.limit === undefined ? 20 : Number(q.limit);
    if (!Number.isInteger(limit) || limit < 1 || limit > 100) throw invalid('limit', `'limit' must be an integer from 1 to 100, got ${JSON.stringify(q.limit).slice(0, 40)}`);
    return pageOf(r.input, order, q.after, limit, (a) => new ApiError(404, `'after' names no input item of response '${r.id}': '${a.slice(0, 100)}'`, 'after', 'not_found'));
  });
}

function responseObject(id: string, createdAt: number, status: string, p: ResponsesParams, output: ResponseItem[], usage: Usage | null,
  finish: string | null, error: { code: string; message: string } | null, stored: boolean, rails: Rails | null): Record<string, unknown> {
  const u = usage && {
    input_tokens: usage.prompt_tokens, input_tokens_details: { cached_tokens: usage.prompt_tokens_details.cached_tokens },
    output_tokens: usage.completion_tokens, output_tokens_details: { reasoning_tokens: 0 },
    total_tokens: usage.prompt_tokens + usage.completion_tokens,
  };
  const s = p.chat.sampling;
  return {
    id, object: 'response', created_at: createdAt, status, background: false,
    completed_at: status === 'completed' ? Math.floor(Date.now() / 1000) : null, error,
    incomplete_details: status === 'incomplete' ? { reason: finish === 'content_filter' ? 'content_filter' : 'max_output_tokens' } : null,
    instructions: p.instructions, max_output_tokens: p.maxOutputTokens, max_tool_calls: null, model: p.chat.model, output,
    parallel_tool_calls: p.chat.parallelToolCalls, previous_response_id: p.previousResponseId, reasoning: { effort: null, summary: null },
    service_tier: 'default', store: stored, temperature: s.temperature, text: p.text, tool_choice: p.toolChoice, tools: p.tools,
    top_logprobs: p.topLogprobs ?? 0, top_p: p.topP, truncation: 'disabled', usage: u, metadata: p.metadata ?? {},
    ...(rails && u ? rails.fields(u) : {}),
  };
}

/**
 * Engine outputs → output items (a message with output_text, function calls), emitting the stream's item events as
 * they open, grow and close. The plain response is built by the same code with no listener, so both carry the same output.
 */
class OutputBuilder {
  readonly output: ResponseItem[] = [];
  private msg: { item: ResponseItem & { type: 'message' }; text: string; logprobs: unknown[] } | null = null;
  private call: (ResponseItem & { type: 'function_call' }) | null = null;
  private pending: { token: string }[] = []; // logprobs of tokens not yet given to text (with tools)

  constructor(
    private readonly tools: ToolCallStream | null,
    private readonly logprobs: ((entries: readonly LogprobEntry[]) => unknown[]) | null,
    private readonly emit: (e: Event) => void,
  ) {}

  push(o: GenerateOutput): void {
    const lp = this.logprobs && o.logprobs ? this.logprobs(o.logprobs) : [];
    if (!this.tools) {
      if (o.text !== '' || lp.length > 0) this.text(o.text, lp);
      return;
    }
    // tool calls: text or call pieces as the text proves which it is; logprobs go with text only (a call has none)
    this.pending.push(...(lp as { token: string }[]));
    const deltas = this.tools.push(o.text);
    let textOnly = this.tools.isText; // the output is text: every token held is the text's
    if (o.finishReason !== null) {
      const end = this.tools.finish();
      deltas.push(...end.deltas);
      if (!end.isCalls) textOnly = true;
    }
    for (const dl of deltas) {
      if ('content' in dl) { this.text(dl.content, textOnly ? this.takePending() : this.tokensOf(dl.content)); continue; }
      const t = dl.tool_calls[0];
      if (t.id !== undefined) this.openCall(t.id, t.function.name ?? '');
      if (t.function.arguments !== '') this.args(t.function.arguments);
    }
    // tokens that add no text (EOS, a character's first bytes) are the text's too, as without tools
    if (textOnly && this.msg && this.pending.length > 0) this.text('', this.takePending());
  }

  private takePending(): unknown[] {
    const out = this.pending;
    this.pending = [];
    return out;
  }

  /** The logprobs of the last tokens held that make up `text`, after calls (those before it were the calls'). */
  private tokensOf(text: string): unknown[] {
    let k = this.pending.length;
    for (let n = 0; k > 0 && n < text.length;) n += this.pending[--k]!.token.length;
    const out = this.pending.slice(k);
    this.pending = [];
    return out;
  }

  /**
   * End of output: close what is open (the last item `incomplete` when the response is); an empty answer is an empty
   * message, but a forced call cut before its name is whole is no item at all (the answer is a call, never text).
   */
  finish(incomplete: boolean): void {
    if (this.output.length === 0 && !this.tools?.forced) this.text('', []);
    this.closeMessage(incomplete);
    this.closeCall(incomplete);
  }

  private text(delta: string, logprobs: unknown[]): void {
    this.closeCall(false);
    if (!this.msg) {
      const item = { id: `msg_${hex(24)}`, type: 'message' as const, status: 'in_progress' as 'completed', role: 'assistant' as const, content: [] };
      this.msg = { item, text: '', logprobs: [] };
      this.output.push(item);
      this.emit({ type: 'response.output_item.added', output_index: this.output.length - 1, item: { ...item, content: [] } });
      this.emit({ type: 'response.content_part.added', item_id: item.id, output_index: this.output.length - 1, content_index: 0, part: { type: 'output_text', text: '', annotations: [], logprobs: [] } });
    }
    this.msg.text += delta;
    this.msg.logprobs.push(...logprobs);
    if (delta !== '' || logprobs.length > 0) {
      this.emit({ type: 'response.output_text.delta', item_id: this.msg.item.id, output_index: this.output.indexOf(this.msg.item), content_index: 0, delta, logprobs });
    }
  }

  private closeMessage(incomplete: boolean): void {
    const m = this.msg;
    if (!m) return;
    this.msg = null;
    const at = this.output.indexOf(m.item);
    const part = { type: 'output_text', text: m.text, annotations: [], logprobs: m.logprobs };
    m.item.content = [part];
    m.item.status = incomplete ? 'incomplete' : 'completed';
    this.emit({ type: 'response.output_text.done', item_id: m.item.id, output_index: at, content_index: 0, text: m.text, logprobs: m.logprobs });
    this.emit({ type: 'response.content_part.done', item_id: m.item.id, output_index: at, content_index: 0, part });
    this.emit({ type: 'response.output_item.done', output_index: at, item: m.item });
  }

  private openCall(callId: string, name: string): void {
    this.closeMessage(false);
    this.closeCall(false);
    const item = { id: `fc_${hex(24)}`, type: 'function_call' as const, status: 'in_progress' as 'completed', arguments: '', call_id: callId, name };
    this.call = item;
    this.output.push(item);
    this.emit({ type: 'response.output_item.added', output_index: this.output.length - 1, item: { ...item } });
  }

  private args(delta: string): void {
    if (!this.call) return;
    this.call.arguments += delta;
    this.emit({ type: 'response.function_call_arguments.delta', item_id: this.call.id, output_index: this.output.indexOf(this.call), delta });
  }

  private closeCall(incomplete: boolean): void {
    const c = this.call;
    if (!c) return;
    this.call = null;
    const at = this.output.indexOf(c);
    c.status = incomplete ? 'incomplete' : 'completed';
    this.emit({ type: 'response.function_call_arguments.done', item_id: c.id, output_index: at, name: c.name, arguments: c.arguments });
    this.emit({ type: 'response.output_item.done', output_index: at, item: { ...c } });
  }
}
