// Tool calls in model output (Llama 3.1 JSON format: {"name": …, "parameters": {…}}, several joined by "; ", an optional
// leading <|python_tag|>) → OpenAI tool_calls, whole or as streaming deltas (id and name first, then argument pieces).

import { randomBytes } from 'node:crypto';
import { PYTHON_TAG } from '../engine/constrained/lazy.js';

export interface ToolCall { readonly id: string; readonly type: 'function'; readonly function: { readonly name: string; readonly arguments: string } }

/** One streaming delta for a choice: content text or a tool-call piece. */
export type ToolDelta =
  | { readonly content: string }
  | { readonly tool_calls: [{ index: number; id?: string; type?: 'function'; function: { name?: string; arguments: string } }] };

export function toolCallId(): string {
  return `call_${randomBytes(12).toString('hex')}`;
}

/** Index just past the JSON value starting at `i` (an object or array), or -1 if it does not close in `s`. */
function valueEnd(s: string, i: number): number {
  let depth = 0;
  let str = false;
  for (let j = i; j < s.length; j++) {
    const c = s[j]!;
    if (str) {
      if (c === '\\') j++;
      else if (c === '"') str = false;
    } else if (c === '"') str = true;
    else if (c === '{' || c === '[') depth++;
    else if (c === '}' || c === ']') { if (--depth === 0) return j + 1; }
  }
  return -1;
}

const isBlank = (c: string | undefined): boolean => c === ' ' || c === '\n' || c === '\t' || c === '\r';

/** Past blanks, a <|python_tag|>, then blanks and ';': where the next call may begin. */
function skipSeparators(s: string, i: number): number {
  while (isBlank(s[i])) i++;
  if (s.startsWith(PYTHON_TAG, i)) i += PYTHON_TAG.length;
  while (isBlank(s[i]) || s[i] === ';') i++;
  return i;
}

/**
 * The text past leading blanks: the output opens calls when it starts with '{' or <|python_tag|> (the lazy grammar of
 * strict tools under auto, engine/constrained/lazy.ts, triggers on the same bytes).
 */
const opening = (text: string): string => text.replace(/^[ \t\n\r]+/, '');

/**
 * The calls `text` opens with, and any text after them (as content), or null when it does not open with a call to one
 * of the named tools. With `maxCalls` (parallel_tool_calls false: 1), the calls past it and the text after them are
 * dropped: the answer is that many calls.
 */
export function parseToolCalls(text: string, tools: ReadonlySet<string>, maxCalls = Infinity): { calls: ToolCall[]; content: string | null } | null {
  const calls: ToolCall[] = [];
  const open = opening(text);
  if (!open.startsWith('{') && !open.startsWith(PYTHON_TAG)) return null;
  let i = skipSeparators(text, 0);
  for (; i < text.length && calls.length < maxCalls; i = skipSeparators(text, i)) {
    const call = text[i] === '{' ? parseCall(text, i, tools) : null;
    if (!call) break;
    calls.push(call.call);
    i = call.end;
  }
  if (calls.length === 0) return null;
  if (calls.length >= maxCalls) return { calls, content: null };
  const rest = text.slice(i).trim();
  return { calls, content: rest === '' ? null : rest };
}

function parseCall(text: string, i: number, tools: ReadonlySet<string>): { call: ToolCall; end: number } | null {
  const end = valueEnd(text, i);
  if (end < 0) return null;
  let v: unknown;
  try { v = JSON.parse(text.slice(i, end)); } catch { return null; }
  const o = v as { name?: unknown; parameters?: unknown; arguments?: unknown };
  if (typeof o.name !== 'string' || !tools.has(o.name)) return null;
  const args = o.parameters ?? o.arguments ?? {};
  if (args === null || typeof args !== 'object' || Array.isArray(args)) return null;
  return { call: { id: toolCallId(), type: 'function', function: { name: o.name, arguments: argumentsText(text, i, end) ?? JSON.stringify(args) } }, end };
}

/**
 * The arguments as the model wrote them, where the call is {"name", then "parameters"} (as streaming sends them), else
 * null. Keys after the arguments (`{"name", "parameters", "x": 1}`) are ignored, as streaming ignores them.
 */
function argumentsText(text: string, i: number, end: number): string | null {
  const m = HEADER.exec(text.slice(i, end));
  if (!m) return null;
  const from = i + m[0].length;
  const to = text[from] === '{' ? valueEnd(text, from) : -1;
  if (to < 0 || to >= end) return null;
  const after = text.slice(to, end - 1).trim(); // between the arguments and the call's closing brace
  return after === '' || after.startsWith(',') ? text.slice(from, to) : null;
}

const NAME = /^\{\s*"name"\s*:\s*"((?:[^"\\]|\\.)*)"/;
const HEADER = /^\{\s*"name"\s*:\s*"((?:[^"\\]|\\.)*)"\s*,\s*"(?:parameters|arguments)"\s*:\s*/;
/** Whether more text could still complete HEADER (tool names hold no spaces or quotes). */
function mayBeHeader(rest: string): boolean {
  const r = rest.replace(/\s+/g, '');
  const open = '{"name":"';
  if (r.length <= open.length) return open.startsWith(r);
  if (!r.startsWith(open)) return false;
  const q = r.indexOf('"', open.length);
  if (q < 0) return /^[a-zA-Z0-9_-]*$/.test(r.slice(open.length));
  const after = r.slice(q + 1);
  return ',"parameters":'.startsWith(after) || ',"arguments":'.startsWith(after);
}

/**
 * Splits one choice's streamed text into content or tool-call deltas. `forced`: the output is known to be calls
 * (tool_choice required / named); otherwise text that opens with '{' or <|python_tag|> is held until it proves a call.
 */
export class ToolCallStream {
  private buf = '';
  private mode: 'undecided' | 'content' | 'calls' | 'held' | 'done' = 'undecided'; // done: maxCalls calls sent, the rest dropped
  private pos = 0; // next unread index of buf in 'calls' mode
  private call: { index: number; argsFrom: number; start: number } | null = null; // the call whose arguments are streaming (start: its '{')
  private emitted: string[] = []; // ids sent, one per call
  readonly calls: ToolCall[] = [];

  constructor(private readonly tools: ReadonlySet<string>, readonly forced: boolean, private readonly maxCalls = Infinity) {}

  /** Whether the output has proved text: all of it is content (what was held and what comes). */
  get isText(): boolean { return this.mode === 'content'; }

  push(text: string): ToolDelta[] {
    if (this.mode === 'done') return [];
    this.buf += text;
    if (this.mode === 'content') return text ? [{ content: text }] : [];
    if (this.mode === 'undecided') {
      const t = opening(this.buf);
      if (t === '') return [];
      if (this.forced || t.startsWith('{') || t.startsWith(PYTHON_TAG) || PYTHON_TAG.startsWith(t)) this.mode = 'calls';
      else { this.mode = 'content'; return [{ content: this.buf }]; }
    }
    return this.mode === 'calls' ? this.scan() : [];
  }

  /**
   * End of output: the last deltas, whether the choice ended as tool calls, and whether the last call was cut short
   * (max_tokens, a stop sequence or an end of text inside it: its arguments, or the call itself, incomplete).
   */
  finish(): { deltas: ToolDelta[]; isCalls: boolean; cut: boolean } {
    if (this.mode === 'content' || this.mode === 'undecided') return { deltas: [], isCalls: false, cut: false };
    if (this.mode === 'done') return { deltas: [], isCalls: true, cut: false };
    const deltas = this.mode === 'calls' ? this.scan() : [];
    if ((this.mode as string) === 'done') return { deltas, isCalls: true, cut: false }; // scan() just closed the last call allowed
    if (this.mode === 'calls' && this.call === null && this.calls.length > 0 && skipSeparators(this.buf, this.pos) >= this.buf.length) return { deltas, isCalls: true, cut: false };
    if (this.call !== null) return { deltas, isCalls: true, cut: true }; // cut short: what was sent stays
    if (this.forced && this.mode === 'calls') {
      // cut before a call's arguments began: a forced answer is calls, never text, so that call with no arguments yet
      // where its name is whole, else nothing more
      const m = NAME.exec(this.buf.slice(skipSeparators(this.buf, this.pos)));
      let name: string | null = null;
      try { name = m ? JSON.parse(`"${m[1]!}"`) as string : null; } catch { name = null; }
      if (name !== null && this.tools.has(name)) {
        const id = toolCallId();
        deltas.push({ tool_calls: [{ index: this.emitted.length, id, type: 'function', function: { name, arguments: '' } }] });
        this.emitted.push(id);
      }
      return { deltas, isCalls: true, cut: true };
    }
    if (this.calls.length > 0) {
      // text after the streamed calls goes out as content, past the separators parseToolCalls skips ('; ')
      const rest = this.buf.slice(skipSeparators(this.buf, this.pos)).trim();
      return { deltas: rest ? [...deltas, { content: rest }] : deltas, isCalls: true, cut: false };
    }
    // held (or never a call): parse the whole; text that is no call goes out as content
    const parsed = parseToolCalls(this.buf, this.tools, this.maxCalls);
    if (!parsed) return { deltas: [{ content: this.buf }], isCalls: false, cut: false };
    this.calls.push(...parsed.calls);
    return {
      deltas: [
        ...parsed.calls.flatMap((c, index) => [
          { tool_calls: [{ index, id: c.id, type: 'function' as const, function: { name: c.function.name, arguments: '' } }] } as ToolDelta,
          { tool_calls: [{ index, function: { arguments: c.function.arguments } }] } as ToolDelta,
        ]),
        ...(parsed.content ? [{ content: parsed.content }] : []),
      ],
      isCalls: true,
      cut: false,
    };
  }

  private scan(): ToolDelta[] {
    const out: ToolDelta[] = [];
    const s = this.buf;
    for (;;) {
      if (this.call) {
        const { index, argsFrom } = this.call;
        const end = valueEnd(s, argsFrom);
        const upto = end < 0 ? s.length : end;
        if (upto > this.pos) out.push({ tool_calls: [{ index, function: { arguments: s.slice(this.pos, upto) } }] });
        this.pos = upto;
        if (end < 0) return out;
        // arguments closed: the call object closes next, or after other keys, which are ignored (as parseToolCalls
        // ignores them) once the whole object parses as this call
        let j = end;
        while (j < s.length && /\s/.test(s[j]!)) j++;
        if (j >= s.length) return out;
        let close = j + 1;
        if (s[j] === ',') {
          close = valueEnd(s, this.call.start);
          if (close < 0) return out; // wait for the call object to close
          if (!this.closesCall(s.slice(this.call.start, close))) { this.mode = 'held'; return out; }
        } else if (s[j] !== '}') { this.mode = 'held'; return out; }
        const args = s.slice(argsFrom, end);
        const c = this.calls.length;
        this.calls.push({ id: this.emitted[c]!, type: 'function', function: { name: this.pendingName!, arguments: args } });
        this.call = null;
        this.pos = close;
        if (this.calls.length >= this.maxCalls) { this.mode = 'done'; return out; }
        continue;
      }
      const i = skipSeparators(s, this.pos);
      if (i >= s.length || (PYTHON_TAG.startsWith(s.slice(i)) && s.length - i < PYTHON_TAG.length)) return out;
      const rest = s.slice(i);
      const m = HEADER.exec(rest);
      if (!m) {
        if (!mayBeHeader(rest)) this.mode = 'held';
        return out;
      }
      let name: string;
      try { name = JSON.parse(`"${m[1]!}"`) as string; } catch { this.mode = 'held'; return out; }
      const argsFrom = i + m[0].length;
      if (!this.tools.has(name) || (argsFrom < s.length && s[argsFrom] !== '{')) { this.mode = 'held'; return out; }
      if (argsFrom >= s.length) return out; // wait for the arguments to begin
      const index = this.emitted.length;
      const id = toolCallId();
      this.emitted.push(id);
      this.pendingName = name;
      out.push({ tool_calls: [{ index, id, type: 'function', function: { name, arguments: '' } }] });
      this.call = { index, argsFrom, start: i };
      this.pos = argsFrom;
    }
  }
  private pendingName: string | null = null;

  /** Whether a call object with keys after its arguments is JSON naming the streamed call's tool. */
  private closesCall(obj: string): boolean {
    try {
      const o = JSON.parse(obj) as { name?: unknown };
      return o.name === this.pendingName;
    } catch {
      return false;
    }
  }
}

/**
 * A whole output read as streaming reads it: the calls (the last one's arguments cut short where the output was) and
 * the content beside them, or null when it holds no call. A non-streamed answer cut by max_tokens inside a call so
 * gives the call that streaming sent.
 */
export function cutToolCalls(text: string, tools: ReadonlySet<string>, forced: boolean, maxCalls = Infinity): { calls: ToolCall[]; content: string | null; cut: boolean } | null {
  const s = new ToolCallStream(tools, forced, maxCalls);
  const deltas = [...s.push(text)];
  const end = s.finish();
  if (!end.isCalls) return null;
  const calls: { id: string; name: string; args: string }[] = [];
  let content = '';
  for (const d of [...deltas, ...end.deltas]) {
    if ('content' in d) content += d.content;
    else if (d.tool_calls[0].id !== undefined) calls.push({ id: d.tool_calls[0].id, name: d.tool_calls[0].function.name!, args: d.tool_calls[0].function.arguments });
    else calls[d.tool_calls[0].index]!.args += d.tool_calls[0].function.arguments;
  }
  return { calls: calls.map((c) => ({ id: c.id, type: 'function', function: { name: c.name, arguments: c.args } })), content: content === '' ? null : content, cut: end.cut };
}
