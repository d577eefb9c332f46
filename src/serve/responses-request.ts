// The Responses API request (POST /v1/responses): checked field by field, turned into the chat-completions request it
// asks for (input items → messages, flat tools → chat tools, text.format → response_format) and validated as chat.

import { randomBytes } from 'node:crypto';
import type { ChatMessage } from '../formats/chat-template.js';
import { ApiError, invalid } from './errors.js';
import { bodyObject, describe, get, isObj, MODERATION_REFUSED, nestingError, required, parseChatRequest, strictCompatible, type ChatParams, type Obj, type ValidationContext } from './validate.js';

type Part = { type: string; text: string; [k: string]: unknown }; // input_text, output_text, refusal

/** An input or output item as stored and listed: a message, a function call or a call's output. */
export type ResponseItem =
  | { id: string; type: 'message'; role: 'user' | 'system' | 'developer' | 'assistant'; status: 'completed' | 'incomplete'; content: Part[] }
  | { id: string; type: 'function_call'; call_id: string; name: string; arguments: string; status: 'completed' | 'incomplete' }
  | { id: string; type: 'function_call_output'; call_id: string; output: string; status: 'completed' };

export interface ResponsesParams {
  readonly chat: ChatParams; // the same request as /v1/chat/completions runs
  readonly items: ResponseItem[]; // this request's input, normalized (GET /v1/responses/{id}/input_items)
  readonly history: ResponseItem[]; // every item of the conversation: the previous response's history and output, then `items`
  readonly instructions: string | null;
  readonly previousResponseId: string | null;
  readonly store: boolean; // as asked (OpenAI's default: true)
  readonly metadata: Record<string, string> | null;
  readonly text: Record<string, unknown>; // echoed: {format, verbosity}
  readonly tools: Array<Record<string, unknown>>; // echoed in the flat shape
  readonly toolChoice: unknown; // echoed as the request gave it; absent → 'auto', the API's default (as OpenAI echoes it, tools or not)
  readonly topLogprobs: number | null; // null: no logprobs
  readonly topP: number; // echoed: as asked (0 runs as top-k 1), else the sampling's
  readonly maxOutputTokens: number | null;
  readonly ignored: readonly string[];
}

/** The stored history a previous_response_id names: its conversation and its output. */
export type PreviousLookup = (id: string) => { history: ResponseItem[]; output: ResponseItem[] };


// floe's sampling extras, as on chat (vLLM's names)
const EXTRAS = ['top_k', 'min_p', 'repetition_penalty', 'frequency_penalty', 'presence_penalty', 'seed', 'speculative'];
const FIELDS = new Set([
  'model', 'input', 'instructions', 'max_output_tokens', 'temperature', 'top_p', 'stream', 'stream_options', 'text', 'tools',
  'tool_choice', 'parallel_tool_calls', 'metadata', 'store', 'user', 'top_logprobs', 'include', 'previous_response_id',
  'reasoning', 'service_tier', 'safety_identifier', 'prompt_cache_key', 'prompt_cache_retention', 'prompt_cache_options', 'truncation',
  'background', 'conversation', 'prompt', 'max_tool_calls', 'context_management', 'moderation', ...EXTRAS,
]);
// OpenAI fields that cannot change a Llama model's answer: accepted, ignored, named in x-floe-ignored-fields (as on chat)
const IGNORED = ['user', 'safety_identifier', 'service_tier', 'prompt_cache_key', 'prompt_cache_retention', 'prompt_cache_options', 'reasoning'];
// Fields that would change the answer and this server cannot honour: 400 naming the field.
const REFUSED: Record<string, string> = {
  conversation: `'conversation' is not supported: this server keeps no conversations; chain responses with 'previous_response_id'`,
  prompt: `'prompt' (a stored prompt template) is not supported; send 'instructions' and 'input'`,
  max_tool_calls: `'max_tool_calls' is not supported; 'parallel_tool_calls: false' limits a response to one call`,
  context_management: `'context_management' is not supported: the input is never compacted here`,
  moderation: MODERATION_REFUSED,
};
const LOGPROBS_INCLUDE = 'message.output_text.logprobs';
// `include` entries naming items this server never outputs (search results, images, encrypted reasoning): nothing to include
const INCLUDE_IGNORED = new Set([
  'file_search_call.results', 'web_search_call.results', 'web_search_call.action.sources', 'message.input_image.image_url',
  'computer_call_output.output.image_url', 'code_interpreter_call.outputs', 'reasoning.encrypted_content',
]);
const ROLES = new Set(['user', 'system', 'developer', 'assistant']);
const MAX_TOP_LOGPROBS = 20;

const newId = (prefix: string): string => `${prefix}_${randomBytes(12).toString('hex')}`;
const str = (v: unknown, param: string): string => {
  if (v === undefined || v === null) throw required(param);
  if (typeof v !== 'string') throw invalid(param, `'${param}' must be a string, got ${describe(v)}`, 'invalid_type');
  return v;
};

export function parseResponsesRequest(body: unknown, ctx: ValidationContext, previous: PreviousLookup | null): ResponsesParams {
  const b = bodyObject(body, FIELDS);
  for (const [k, why] of Object.entries(REFUSED)) if (get(b, k) !== undefined) throw invalid(k, why, 'unsupported_parameter');
  if (get(b, 'background') === true) throw invalid('background', `'background: true' is not supported: responses run while the request is open (use the Batch API for offline work)`, 'unsupported_parameter');
  const truncation = get(b, 'truncation');
  if (truncation !== undefined && truncation !== 'disabled') {
    throw invalid('truncation', `'truncation' must be "disabled" (an input over the context is a 400, never cut), got ${describe(truncation)}`, 'unsupported_parameter');
  }
  const ignored = IGNORED.filter((k) => get(b, k) !== undefined);
  for (const k of ['user', 'safety_identifier', 'service_tier', 'prompt_cache_key', 'prompt_cache_retention']) if (get(b, k) !== undefined) str(get(b, k), k);
  for (const k of ['reasoning', 'prompt_cache_options']) {
    const v = get(b, k);
    if (v !== undefined && !isObj(v)) throw invalid(k, `'${k}' must be an object, got ${describe(v)}`, 'invalid_type');
  }

  const streamV = get(b, 'stream');
  if (streamV !== undefined && typeof streamV !== 'boolean') throw invalid('stream', `'stream' must be a boolean, got ${describe(streamV)}`, 'invalid_type');
  const stream = streamV === true;
  const so = get(b, 'stream_options');
  if (so !== undefined) {
    if (!stream) throw invalid('stream_options', `'stream_options' is only allowed when 'stream' is true`);
    if (!isObj(so)) throw invalid('stream_options', `'stream_options' must be an object, got ${describe(so)}`, 'invalid_type');
    for (const k of Object.keys(so)) {
      if (k !== 'include_obfuscation') throw invalid(`stream_options.${k}`, `unrecognized argument 'stream_options.${k}'`, 'unknown_parameter');
    }
    if (get(so, 'include_obfuscation') !== undefined) ignored.push('stream_options.include_obfuscation');
  }

  // metadata: at most 16 string pairs (keys up to 64 characters, values up to 512), as OpenAI checks it
  const meta = get(b, 'metadata');
  if (meta !== undefined) {
    if (!isObj(meta)) throw invalid('metadata', `'metadata' must be an object of string values, got ${describe(meta)}`, 'invalid_type');
    const keys = Object.keys(meta);
    if (keys.length > 16) throw invalid('metadata', `'metadata' may hold at most 16 keys, got ${keys.length}`);
    for (const k of keys) {
      if (k.length > 64) throw invalid('metadata', `'metadata' key '${k.slice(0, 40)}…' is longer than 64 characters`);
      if (typeof meta[k] !== 'string' || (meta[k] as string).length > 512) throw invalid(`metadata.${k}`, `'metadata.${k}' must be a string of at most 512 characters, got ${describe(meta[k])}`);
    }
  }
  const storeV = get(b, 'store');
  if (storeV !== undefined && typeof storeV !== 'boolean') throw invalid('store', `'store' must be a boolean, got ${describe(storeV)}`, 'invalid_type');
  const store = storeV !== false;

  // include: the logprobs of output text; other entries name items never output here
  let logprobs = false;
  const inc = get(b, 'include');
  if (inc !== undefined) {
    if (!Array.isArray(inc)) throw invalid('include', `'include' must be an array of strings, got ${describe(inc)}`, 'invalid_type');
    inc.forEach((e, i) => {
      if (e === LOGPROBS_INCLUDE) logprobs = true;
      else if (typeof e === 'string' && INCLUDE_IGNORED.has(e)) ignored.push(`include[${i}]`);
      else throw invalid(`include[${i}]`, `'include[${i}]' must be one of ${[LOGPROBS_INCLUDE, ...INCLUDE_IGNORED].join(', ')}, got ${describe(e)}`);
    });
  }
  const tl = get(b, 'top_logprobs');
  if (tl !== undefined && (typeof tl !== 'number' || !Number.isInteger(tl) || tl < 0 || tl > MAX_TOP_LOGPROBS)) {
    throw invalid('top_logprobs', `'top_logprobs' must be an integer >= 0 and <= ${MAX_TOP_LOGPROBS}, got ${describe(tl)}`, typeof tl === 'number' ? 'invalid_value' : 'invalid_type');
  }
  // top_logprobs > 0 asks for logprobs by itself; include asks with top 0 by default
  const topLogprobs = logprobs || (typeof tl === 'number' && tl > 0) ? (tl as number | undefined) ?? 0 : null;

  const instrV = get(b, 'instructions');
  if (instrV !== undefined && typeof instrV !== 'string') throw invalid('instructions', `'instructions' must be a string, got ${describe(instrV)}`, 'invalid_type');
  const instructions = (instrV as string | undefined) ?? null;

  const prevV = get(b, 'previous_response_id');
  let prior: ResponseItem[] = [];
  let priorOutput: ResponseItem[] = [];
  if (prevV !== undefined) {
    if (typeof prevV !== 'string') throw invalid('previous_response_id', `'previous_response_id' must be a string, got ${describe(prevV)}`, 'invalid_type');
    if (!previous) {
      throw invalid('previous_response_id', `'previous_response_id' needs stored responses, and this server stores none (started with --no-batch); send the whole conversation in 'input'`, 'unsupported_parameter');
    }
    const prev = previous(prevV);
    prior = [...prev.history, ...prev.output];
    priorOutput = prev.output;
  }

  const inputV = get(b, 'input');
  if (inputV === undefined) throw required('input');
  const items = inputItems(inputV);
  // the previous response's calls are answered in this input (as OpenAI asks), and were whole
  const answered = new Set(items.flatMap((it) => (it.type === 'function_call_output' ? [it.call_id] : [])));
  for (const it of priorOutput) {
    if (it.type !== 'function_call') continue;
    if (!answered.has(it.call_id)) throw invalid('input', `No tool output found for function call ${it.call_id}.`);
    if (it.status === 'incomplete') {
      throw invalid('previous_response_id', `the previous response's function call ${it.call_id} was cut by max_output_tokens (its arguments are not whole JSON), so it cannot be answered; ask again with a larger max_output_tokens`);
    }
  }
  const history = [...prior, ...items];
  const messages = toMessages(history, prior.length);
  if (instructions !== null) messages.unshift({ role: 'system', content: instructions });
  if (messages.length === 0) throw invalid('input', `'input' must hold at least one item`);

  const text = textConfig(b, ignored);
  const tools = toolsOf(b);
  const toolChoice = get(b, 'tool_choice');
  const chatBody: Obj = {
    model: get(b, 'model'), messages, stream, temperature: get(b, 'temperature'), top_p: get(b, 'top_p'),
    max_completion_tokens: get(b, 'max_output_tokens'), parallel_tool_calls: get(b, 'parallel_tool_calls'),
    tools: tools.length > 0 ? tools.map(({ type: _t, ...f }) => ({ type: 'function', function: f })) : undefined,
    // 'auto' is the Responses default, echoed back: sent again with no tools it is the default, not chat's 400 (tools needed)
    tool_choice: isObj(toolChoice) && toolChoice.type === 'function' ? { type: 'function', function: { name: toolChoice.name } }
      : toolChoice === 'auto' && tools.length === 0 ? undefined : toolChoice,
    response_format: text.format,
    ...(topLogprobs !== null ? { logprobs: true, top_logprobs: topLogprobs } : {}),
    ...Object.fromEntries(EXTRAS.map((k) => [k, get(b, k)])),
  };
  if (isObj(toolChoice) && toolChoice.type !== 'function') {
    throw invalid('tool_choice.type', `tool_choice type ${describe(toolChoice.type)} is not supported; use "none", "auto", "required" or {"type": "function", "name"}`, 'unsupported_parameter');
  }
  if (isObj(toolChoice) && typeof toolChoice.name !== 'string') throw required('tool_choice.name', ` (the function to call)`);
  if (toolChoice !== undefined && !isObj(toolChoice) && toolChoice !== 'none' && toolChoice !== 'auto' && toolChoice !== 'required') {
    throw invalid('tool_choice', `'tool_choice' must be "none", "auto", "required" or {"type": "function", "name"}, got ${describe(toolChoice)}`, typeof toolChoice === 'string' ? 'invalid_value' : 'invalid_type');
  }
  let chat: ChatParams;
  try {
    chat = parseChatRequest(chatBody, ctx);
  } catch (e) {
    throw e instanceof ApiError ? renamed(e) : e;
  }
  const parallel = get(b, 'parallel_tool_calls');
  if (parallel !== undefined && tools.length === 0) ignored.push('parallel_tool_calls');
  if (get(b, 'metadata') !== undefined && !previous) ignored.push('metadata');
  if (storeV === true && !previous) ignored.push('store');
  return {
    chat: { ...chat, maxTokensParam: 'max_output_tokens' },
    items, history, instructions, previousResponseId: (prevV as string | undefined) ?? null, store, metadata: (meta as Record<string, string> | undefined) ?? null,
    text: { format: get(b, 'text') !== undefined && isObj((get(b, 'text') as Obj).format) ? (get(b, 'text') as Obj).format as Obj : { type: 'text' }, verbosity: 'medium' },
    tools, toolChoice: toolChoice ?? 'auto', topLogprobs, topP: get(b, 'top_p') === 0 ? 0 : chat.sampling.topP,
    maxOutputTokens: chat.maxTokens, ignored,
  };
}

/** Chat's parameter names in an error → the Responses API's. */
function renamed(e: ApiError): ApiError {
  const names: Array<[RegExp, string]> = [
    [/response_format\.json_schema\./g, 'text.format.'], [/response_format/g, 'text.format'],
    [/max_completion_tokens/g, 'max_output_tokens'], [/tools\[(\d+)\]\.function\./g, 'tools[$1].'], [/\bmessages\b/g, 'input'],
  ];
  const fix = (s: string) => names.reduce((t, [re, to]) => t.replace(re, to), s);
  return new ApiError(e.status, fix(e.message), e.param === null ? null : fix(e.param), e.code);
}

/** text: {format: {type: text | json_object | json_schema, name, schema, strict, description}, verbosity}. */
function textConfig(b: Obj, ignored: string[]): { format: Obj | undefined } {
  const t = get(b, 'text');
  if (t === undefined) return { format: undefined };
  if (!isObj(t)) throw invalid('text', `'text' must be an object {format, verbosity}, got ${describe(t)}`, 'invalid_type');
  for (const k of Object.keys(t)) if (k !== 'format' && k !== 'verbosity') throw invalid(`text.${k}`, `unrecognized argument 'text.${k}'`, 'unknown_parameter');
  if (get(t, 'verbosity') !== undefined) ignored.push('text.verbosity');
  const f = get(t, 'format');
  if (f === undefined) return { format: undefined };
  if (!isObj(f)) throw invalid('text.format', `'text.format' must be an object with a 'type', got ${describe(f)}`, 'invalid_type');
  if (f.type === undefined || f.type === null) throw required('text.format.type', ` ("text", "json_object" or "json_schema")`);
  if (f.type === 'text' || f.type === 'json_object') return { format: { type: f.type } };
  if (f.type !== 'json_schema') {
    throw invalid('text.format.type', `text.format type ${describe(f.type)} is not supported; use "text", "json_object" or "json_schema"`, 'unsupported_parameter');
  }
  if (f.schema === undefined || f.schema === null) throw required('text.format.schema', ` when 'text.format.type' is "json_schema"`);
  if (f.description !== undefined && f.description !== null && typeof f.description !== 'string') throw invalid('text.format.description', `'text.format.description' must be a string`, 'invalid_type');
  return { format: { type: 'json_schema', json_schema: { name: f.name, schema: f.schema, strict: f.strict } } };
}

/** tools: function tools in the flat shape {type: "function", name, description, parameters, strict}. */
function toolsOf(b: Obj): Array<Record<string, unknown>> {
  const v = get(b, 'tools');
  if (v === undefined) return [];
  if (!Array.isArray(v)) throw invalid('tools', `'tools' must be an array of tools, got ${describe(v)}`, 'invalid_type');
  return v.map((t, i) => {
    const p = `tools[${i}]`;
    if (!isObj(t)) throw invalid(p, `'${p}' must be a tool object, got ${describe(t)}`, 'invalid_type');
    if (t.type === undefined || t.type === null) throw required(`${p}.type`, ` (only "function" tools are supported)`);
    if (t.type !== 'function') {
      throw invalid(`${p}.type`, `built-in tool ${describe(t.type)} is not supported: this server runs function tools only ({"type": "function", "name", "parameters"})`, 'unsupported_parameter');
    }
    if (isObj(t.function)) throw invalid(`${p}.function`, `'${p}' has chat's nested shape; the Responses API takes {"type": "function", "name", "description", "parameters", "strict"}`, 'invalid_value');
    for (const k of Object.keys(t)) {
      if (!['type', 'name', 'description', 'parameters', 'strict'].includes(k)) throw invalid(`${p}.${k}`, `unrecognized argument '${p}.${k}'`, 'unknown_parameter');
    }
    if (t.strict !== undefined && t.strict !== null && typeof t.strict !== 'boolean') throw invalid(`${p}.strict`, `'${p}.strict' must be a boolean`, 'invalid_type');
    // strict omitted (or null): strict where the schema allows it, else not, as OpenAI's Responses API does
    const strict = typeof t.strict === 'boolean' ? t.strict : strictCompatible(isObj(t.parameters) ? t.parameters : undefined);
    const out: Record<string, unknown> = { type: 'function', name: t.name, description: t.description ?? null, parameters: t.parameters ?? null, strict };
    if (t.name === undefined || t.name === null) throw required(`${p}.name`);
    if (t.description === undefined || t.description === null) delete out.description;
    if (t.parameters === undefined || t.parameters === null) delete out.parameters;
    return out;
  });
}

/** The text of a message's content: a string or parts (input_text, output_text, refusal). */
function contentText(v: unknown, p: string, role: string): { text: string; parts: Part[] } {
  if (typeof v === 'string') return { text: v, parts: [{ type: role === 'assistant' ? 'output_text' : 'input_text', text: v, ...(role === 'assistant' ? { annotations: [] } : {}) }] };
  if (v === undefined || v === null) throw required(p);
  if (!Array.isArray(v)) throw invalid(p, `'${p}' must be a string or an array of content parts, got ${describe(v)}`, 'invalid_type');
  const allowed = role === 'assistant' ? ['output_text', 'refusal', 'input_text'] : ['input_text'];
  const parts = v.map((part, j) => {
    const q = `${p}[${j}]`;
    if (!isObj(part)) throw invalid(q, `'${q}' must be a content part object, got ${describe(part)}`, 'invalid_type');
    if (part.type === undefined || part.type === null) throw required(`${q}.type`);
    if (part.type === 'input_image' || part.type === 'input_file' || part.type === 'input_audio') {
      throw invalid(`${q}.type`, `content part type ${describe(part.type)} is not supported: this model takes text only ('input_text' parts)`, 'unsupported_parameter');
    }
    if (typeof part.type !== 'string' || !allowed.includes(part.type)) {
      throw invalid(`${q}.type`, `'${q}.type' of a '${role}' message must be ${allowed.map((a) => `"${a}"`).join(' or ')}, got ${describe(part.type)}`);
    }
    const key = part.type === 'refusal' ? 'refusal' : 'text';
    const text = str(part[key], `${q}.${key}`);
    return part.type === 'output_text' ? { type: 'output_text', text, annotations: [] } : part.type === 'refusal' ? { type: 'refusal', text, refusal: text } : { type: 'input_text', text };
  });
  return { text: parts.map((x) => x.text).join(''), parts };
}

/** input: a string (one user message) or a list of items, normalized with ids. */
function inputItems(v: unknown): ResponseItem[] {
  if (typeof v === 'string') return [{ id: newId('msg'), type: 'message', role: 'user', status: 'completed', content: [{ type: 'input_text', text: v }] }];
  if (!Array.isArray(v)) throw invalid('input', `'input' must be a string or an array of input items, got ${describe(v)}`, 'invalid_type');
  return v.map((it, i): ResponseItem => {
    const p = `input[${i}]`;
    if (!isObj(it)) throw invalid(p, `'${p}' must be an input item object, got ${describe(it)}`, 'invalid_type');
    const type = it.type ?? 'message';
    const id = typeof it.id === 'string' ? it.id : null;
    if (type === 'message') {
      if (it.role === undefined || it.role === null) throw required(`${p}.role`);
      if (typeof it.role !== 'string' || !ROLES.has(it.role)) throw invalid(`${p}.role`, `'${p}.role' must be one of ${[...ROLES].join(', ')}, got ${describe(it.role)}`);
      const { parts } = contentText(it.content, `${p}.content`, it.role);
      return { id: id ?? newId('msg'), type: 'message', role: it.role as 'user', status: 'completed', content: parts };
    }
    if (type === 'function_call') {
      const args = str(it.arguments, `${p}.arguments`);
      let parsed: unknown;
      try { parsed = JSON.parse(args); } catch { parsed = undefined; }
      if (!isObj(parsed)) throw invalid(`${p}.arguments`, `'${p}.arguments' must be a JSON string of an object, got ${describe(args)}`);
      const deep = nestingError(parsed, `${p}.arguments`);
      if (deep) throw deep;
      return { id: id ?? newId('fc'), type: 'function_call', call_id: str(it.call_id, `${p}.call_id`), name: str(it.name, `${p}.name`), arguments: args, status: 'completed' };
    }
    if (type === 'function_call_output') {
      const out = it.output;
      const output = typeof out === 'string' ? out : contentText(out, `${p}.output`, 'user').text;
      return { id: id ?? newId('fco'), type: 'function_call_output', call_id: str(it.call_id, `${p}.call_id`), output, status: 'completed' };
    }
    if (type === 'item_reference') throw invalid(`${p}.type`, `'item_reference' items are not supported; send the item itself, or chain with 'previous_response_id'`, 'unsupported_parameter');
    throw invalid(`${p}.type`, `input item type ${describe(type)} is not supported; use "message", "function_call" or "function_call_output"`, 'unsupported_parameter');
  });
}

/** Items → chat messages: calls join the assistant turn before them, a call's output is a tool message. */
function toMessages(items: readonly ResponseItem[], priorCount: number): ChatMessage[] {
  const out: ChatMessage[] = [];
  const calls = new Set<string>();
  items.forEach((it, k) => {
    const p = `input[${k - priorCount}]`;
    if (it.type === 'message') {
      out.push({ role: it.role === 'developer' ? 'system' : it.role, content: it.content.map((c) => c.text).join('') });
    } else if (it.type === 'function_call') {
      calls.add(it.call_id);
      const call = { id: it.call_id, type: 'function', function: { name: it.name, arguments: JSON.parse(it.arguments) as Obj } };
      const last = out.at(-1);
      if (last?.role === 'assistant') last.tool_calls = [...((last.tool_calls as unknown[] | undefined) ?? []), call];
      else out.push({ role: 'assistant', content: '', tool_calls: [call] });
    } else {
      if (!calls.has(it.call_id)) throw invalid(`${p}.call_id`, `no function_call item with call_id '${it.call_id.slice(0, 64)}' comes before this function_call_output`);
      out.push({ role: 'tool', tool_call_id: it.call_id, content: it.output });
    }
  });
  return out;
}
