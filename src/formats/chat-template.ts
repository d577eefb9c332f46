// Chat templates: pick the Jinja template from tokenizer_config.json / chat_template.jinja and render it with @huggingface/jinja.
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { Environment, Interpreter, Template } from "@huggingface/jinja";
import type { Tokenizer } from "./tokenizer.js";
import { showJson } from "./json-show.js";

/** One chat turn; extra fields (tool_calls, name, tool_call_id) pass through to the template. */
export interface ChatMessage {
  role: string;
  content?: string | null | ReadonlyArray<Record<string, unknown>>;
  [key: string]: unknown;
}

export interface RenderChatOptions {
  /** Append the header that opens the assistant's turn. Default false. */
  addGenerationPrompt?: boolean;
  bosToken?: string;
  eosToken?: string;
  /** Tool (function) schemas, passed as `tools`. */
  tools?: readonly unknown[];
  /** RAG documents, passed as `documents`. */
  documents?: readonly unknown[];
  /** Further template variables, e.g. { date_string: "26 Jul 2024" }. They cannot override the fields above. */
  extra?: Record<string, unknown>;
  /**
   * Leave the final message open for the model to continue (vLLM's continue_final_message, transformers'
   * apply_chat_template): the rendering is cut right after that message's content. Needs addGenerationPrompt false.
   */
  continueFinalMessage?: boolean;
}

/** continue_final_message, and the final message's text is not in the rendering as written. */
export class FinalMessageError extends Error {}

/** jinja2.sandbox.MAX_RANGE: transformers renders chat templates in the sandbox, which refuses longer ranges. */
export const MAX_RANGE = 100_000;

/** The library's own strftime_now, reached through a template (it is not exported). */
const STRFTIME = new Template("{{ strftime_now(f) }}");

/**
 * @huggingface/jinja's globals (setupGlobals), with range() bounded as jinja2's sandbox bounds it: the library builds
 * the whole list first, and range(1000000000) aborted the process (V8 "Fatal JavaScript invalid size error").
 */
function globalsEnv(): Environment {
  const env = new Environment();
  env.set("false", false);
  env.set("true", true);
  env.set("none", null);
  env.set("raise_exception", (args: unknown) => {
    throw new Error(String(args));
  });
  env.set("range", boundedRange);
  env.set("strftime_now", (f: unknown) => STRFTIME.render({ f }));
  env.set("True", true);
  env.set("False", false);
  env.set("None", null);
  return env;
}

/** The library's range(), after jinja2's sandbox check on its length. */
function boundedRange(start: number, stop?: number, step = 1): number[] {
  if (stop === undefined) {
    stop = start;
    start = 0;
  }
  if (step === 0) throw new Error("range() step must not be zero");
  const n = Math.ceil((stop - start) / step);
  if (n > MAX_RANGE) throw new Error(`range() of ${n} items: the sandbox blocks ranges larger than ${MAX_RANGE} (as transformers' does)`);
  const out: number[] = [];
  if (step > 0) for (let i = start; i < stop; i += step) out.push(i);
  else for (let i = start; i > stop; i += step) out.push(i);
  return out;
}

export class ChatTemplate {
  readonly source: string;
  /** Where the template came from, for error messages. */
  readonly origin: string;
  private readonly template: Template;

  constructor(source: string, origin = "chat_template") {
    if (typeof source !== "string") throw new Error(`${origin}: expected a template string, got ${typeof source}`);
    this.source = source;
    this.origin = origin;
    try {
      this.template = new Template(source);
    } catch (e) {
      // the parser recurses per nested block or parenthesis: thousands of them overflow its stack
      if (e instanceof RangeError) throw new Error(`${origin}: cannot parse chat template: blocks or expressions nested too deeply (${source.length} chars)`);
      throw new Error(`${origin}: cannot parse chat template: ${(e as Error).message}`);
    }
  }

  /** Whether the template reads the `tools` variable, i.e. can render tool definitions. */
  get readsTools(): boolean {
    return /\btools\b/.test(this.source);
  }

  render(messages: readonly ChatMessage[], opts: RenderChatOptions = {}): string {
    if (!Array.isArray(messages)) throw new Error(`${this.origin}: messages must be an array`);
    messages.forEach((m, i) => {
      if (m === null || typeof m !== "object" || typeof m.role !== "string") {
        throw new Error(`${this.origin}: messages[${i}] must be an object with a string 'role'`);
      }
    });
    const vars: Record<string, unknown> = {
      ...(opts.extra ?? {}),
      messages,
      add_generation_prompt: opts.addGenerationPrompt ?? false,
      bos_token: opts.bosToken ?? "",
      eos_token: opts.eosToken ?? "",
    };
    if (opts.tools !== undefined) vars.tools = opts.tools;
    if (opts.documents !== undefined) vars.documents = opts.documents;
    if (opts.continueFinalMessage && opts.addGenerationPrompt) {
      throw new Error(`${this.origin}: continueFinalMessage and addGenerationPrompt cannot both be set: one continues the final message, the other opens a new one`);
    }
    let text: string;
    try {
      // Template.render with globalsEnv's bounded range (render() declares its own globals, range among them)
      const env = globalsEnv();
      for (const [k, v] of Object.entries(vars)) env.set(k, v);
      text = new Interpreter(env).run(this.template.parsed).value as string;
    } catch (e) {
      throw new Error(`${this.origin}: rendering failed: ${(e as Error).message}`);
    }
    return opts.continueFinalMessage ? this.cutAfterFinalMessage(text, messages) : text;
  }

  /**
   * The rendering up to the end of the final message's content, found from the end: transformers'
   * apply_chat_template(continue_final_message=True), which vLLM runs. A template that trims the content
   * (Llama's `content | trim`) still matches; trailing whitespace it dropped is not put back.
   */
  private cutAfterFinalMessage(text: string, messages: readonly ChatMessage[]): string {
    const i = messages.length - 1;
    const final = finalText(messages[i]?.content);
    // transformers: `final_message.strip() not in rendered_chat` is an error; an empty one would cut nothing
    if (final === null || final.trim() === "") {
      throw new FinalMessageError(`messages[${i}] has no text to continue; continue_final_message needs a final message with content`);
    }
    const at = text.lastIndexOf(final.trim());
    if (at < 0) {
      throw new FinalMessageError(`${this.origin} does not render the content of messages[${i}] verbatim (it changes or drops it), so continue_final_message cannot cut the prompt after it; send the message as the template writes it or leave out continue_final_message`);
    }
    // transformers: `if rendered[loc : loc + len(final.lstrip())] == final`: the template kept the trailing whitespace,
    // so the cut keeps it too; else the cut ends at the stripped text
    const open = final.trimStart().length;
    return text.slice(0, at + (text.slice(at, at + open) === final ? open : final.trim().length));
  }
}

/** A message's text as transformers reads it for continue_final_message: the string, or the last text part. */
function finalText(content: ChatMessage["content"]): string | null {
  if (typeof content === "string") return content;
  if (!Array.isArray(content)) return null;
  for (let j = content.length - 1; j >= 0; j--) {
    const t = content[j]?.text;
    if (typeof t === "string") return t;
  }
  return null;
}

/** Render `messages` with a template source or a parsed ChatTemplate. */
export function renderChat(template: string | ChatTemplate, messages: readonly ChatMessage[], opts: RenderChatOptions = {}): string {
  const t = typeof template === "string" ? new ChatTemplate(template) : template;
  return t.render(messages, opts);
}

/**
 * Render with the tokenizer's BOS/EOS strings and encode without adding specials again
 * (the template writes BOS itself; as transformers' apply_chat_template(tokenize=True)).
 */
export function encodeChat(
  tokenizer: Pick<Tokenizer, "encode" | "bosToken" | "eosToken">,
  template: string | ChatTemplate,
  messages: readonly ChatMessage[],
  opts: RenderChatOptions = {},
): number[] {
  const text = renderChat(template, messages, {
    ...opts,
    bosToken: opts.bosToken ?? tokenizer.bosToken ?? "",
    eosToken: opts.eosToken ?? tokenizer.eosToken ?? "",
  });
  return tokenizer.encode(text, { addSpecialTokens: false });
}

export interface SelectOptions {
  /** A named template from the list form (e.g. "tool_use", "rag"). */
  name?: string;
  /** When no name is given and tools are in use, prefer a template named "tool_use". */
  withTools?: boolean;
}

/**
 * The template source from a tokenizer_config.json `chat_template` value: a string, or a list of {name, template}.
 * Returns null when the value is absent.
 */
export function selectChatTemplate(value: unknown, opts: SelectOptions = {}, origin = "chat_template"): string | null {
  if (value === undefined || value === null) {
    if (opts.name !== undefined) throw new Error(`${origin}: no chat template, but template '${opts.name}' was requested`);
    return null;
  }
  if (typeof value === "string") {
    if (opts.name !== undefined && opts.name !== "default") {
      throw new Error(`${origin}: only a single unnamed template exists, but template '${opts.name}' was requested`);
    }
    return value;
  }
  if (!Array.isArray(value)) throw new Error(`${origin}: expected a string or a list of {name, template}, got ${typeof value}`);
  const named = new Map<string, string>();
  value.forEach((entry, i) => {
    const e = entry as { name?: unknown; template?: unknown } | null;
    if (e === null || typeof e !== "object" || typeof e.name !== "string" || typeof e.template !== "string") {
      throw new Error(`${origin}[${i}]: expected {name: string, template: string}`);
    }
    named.set(e.name, e.template);
  });
  const names = [...named.keys()].join(", ");
  if (opts.name !== undefined) {
    const t = named.get(opts.name);
    if (t === undefined) throw new Error(`${origin}: no template named '${opts.name}' (have: ${names})`);
    return t;
  }
  if (opts.withTools && named.has("tool_use")) return named.get("tool_use")!;
  const t = named.get("default");
  if (t === undefined) throw new Error(`${origin}: no template named 'default' (have: ${names}); pass a name`);
  return t;
}

/**
 * The chat template of an HF model dir: chat_template.jinja wins over tokenizer_config.json `chat_template`
 * (as in transformers). Null when neither exists.
 */
export async function loadChatTemplate(dir: string, opts: SelectOptions = {}): Promise<ChatTemplate | null> {
  const jinjaPath = join(dir, "chat_template.jinja");
  const jinja = await readIfExists(jinjaPath);
  if (jinja !== null && opts.name === undefined) return new ChatTemplate(jinja, jinjaPath);
  const configPath = join(dir, "tokenizer_config.json");
  const text = await readIfExists(configPath);
  if (text === null) {
    if (opts.name !== undefined) throw new Error(`${dir}: no tokenizer_config.json, but template '${opts.name}' was requested`);
    return null;
  }
  let config: unknown;
  try {
    config = JSON.parse(text);
  } catch (e) {
    throw new Error(`${configPath}: invalid JSON: ${(e as Error).message}`);
  }
  // null reads as no tokenizer_config.json, as loadTokenizer reads it; any other non-object is refused there too
  if (config === null) config = {};
  if (typeof config !== "object" || Array.isArray(config)) throw new Error(`${configPath}: expected a JSON object, got ${showJson(config, 40)}`);
  const origin = `${configPath} chat_template`;
  const source = selectChatTemplate((config as Record<string, unknown>).chat_template, opts, origin);
  return source === null ? null : new ChatTemplate(source, opts.name ? `${origin} '${opts.name}'` : origin);
}

async function readIfExists(path: string): Promise<string | null> {
  try {
    return await readFile(path, "utf8");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw new Error(`${path}: cannot read: ${(e as Error).message}`); // fs's own message names no file (EISDIR)
  }
}
