// Llama Guard prompts: Meta's published chat templates for Llama Guard 3 (8B), 3-1B and 2, built in code byte for byte.
//
// Sources (facts only; fixtures under test/fixtures/guard/ hold the template text itself):
//   Llama Guard 3 8B / 3-1B: the `chat_template` of meta-llama/Llama-Guard-3-8B and -1B (as vendored in the GGUFs,
//   huggingface.js packages/ollama-utils/src/chat-template-automap.ts); Llama Guard 2: meta-llama/Meta-Llama-Guard-2-8B's
//   `chat_template`; custom category lines ("S1: name" + "\n" + description) follow llama-recipes prompt_format_utils.py
//   build_custom_prompt(with_policy=True).

export type GuardFormat = "llama-guard-3" | "llama-guard-3-1b" | "llama-guard-2";
export const GUARD_FORMATS: readonly GuardFormat[] = ["llama-guard-3", "llama-guard-3-1b", "llama-guard-2"];

/** Which side of the conversation is judged: the last user message, or the last assistant (agent) answer. */
export type GuardRole = "user" | "agent";

/** One policy line. `name` is written verbatim (the published names end in "." or, for Llama Guard 2, ". "). */
export interface GuardCategory {
  readonly code: string;
  readonly name: string;
  readonly description?: string;
}

/** One turn as the guard sees it: user and assistant alternate, starting with the user. */
export interface GuardMessage {
  readonly role: "user" | "assistant";
  readonly content: string;
}

function table(names: readonly string[]): readonly GuardCategory[] {
  return Object.freeze(names.map((name, i) => Object.freeze({ code: `S${i + 1}`, name })));
}

/** Llama Guard 3 8B (MLCommons hazard taxonomy, S1–S14). */
export const LLAMA_GUARD_3_CATEGORIES = table([
  "Violent Crimes.", "Non-Violent Crimes.", "Sex Crimes.", "Child Exploitation.", "Defamation.", "Specialized Advice.",
  "Privacy.", "Intellectual Property.", "Indiscriminate Weapons.", "Hate.", "Self-Harm.", "Sexual Content.", "Elections.",
  "Code Interpreter Abuse.",
]);

/** Llama Guard 3 1B: S1–S13 (no Code Interpreter Abuse). */
export const LLAMA_GUARD_3_1B_CATEGORIES = Object.freeze(LLAMA_GUARD_3_CATEGORIES.slice(0, 13));

/** Llama Guard 2 (S1–S11; the published template writes each name with a trailing space). */
export const LLAMA_GUARD_2_CATEGORIES = table([
  "Violent Crimes. ", "Non-Violent Crimes. ", "Sex Crimes. ", "Child Exploitation. ", "Specialized Advice. ", "Privacy. ",
  "Intellectual Property. ", "Indiscriminate Weapons. ", "Hate. ", "Self-Harm. ", "Sexual Content. ",
]);

export function defaultCategories(format: GuardFormat): readonly GuardCategory[] {
  switch (format) {
    case "llama-guard-3": return LLAMA_GUARD_3_CATEGORIES;
    case "llama-guard-3-1b": return LLAMA_GUARD_3_1B_CATEGORIES;
    case "llama-guard-2": return LLAMA_GUARD_2_CATEGORIES;
    default: throw new Error(`guard: unknown format '${String(format)}' (expected ${GUARD_FORMATS.join(", ")})`);
  }
}

export interface GuardPromptOptions {
  format: GuardFormat;
  /** Replaces the format's default table (codes kept as given). */
  categories?: readonly GuardCategory[];
  /** Category codes left out of the prompt (e.g. ["S6", "S7"]); the others keep their codes, as the 3-1B template does. */
  exclude?: readonly string[];
}

/** The categories a prompt lists, after custom replacement and exclusion; throws on an unknown excluded code. */
export function effectiveCategories(opts: GuardPromptOptions): readonly GuardCategory[] {
  const cats = opts.categories ?? defaultCategories(opts.format);
  validateCategories(cats, "categories");
  const codes = new Set(cats.map((c) => c.code));
  for (const code of opts.exclude ?? []) {
    if (!codes.has(code)) {
      throw new Error(`guard: cannot exclude category '${code}': not in the list (have: ${[...codes].join(", ")})`);
    }
  }
  const drop = new Set(opts.exclude ?? []);
  return cats.filter((c) => !drop.has(c.code));
}

export function validateCategories(cats: readonly GuardCategory[], where: string): void {
  if (!Array.isArray(cats) || cats.length === 0) throw new Error(`${where}: expected a non-empty list of categories`);
  const seen = new Set<string>();
  cats.forEach((c, i) => {
    if (c === null || typeof c !== "object") throw new Error(`${where}[${i}]: expected {code, name, description?}`);
    if (typeof c.code !== "string" || !/^[A-Za-z][A-Za-z0-9_]*$/.test(c.code)) {
      throw new Error(`${where}[${i}].code: expected a code like "S1", got ${JSON.stringify(c.code)}`);
    }
    if (typeof c.name !== "string" || c.name.trim() === "") throw new Error(`${where}[${i}].name: expected a non-empty string`);
    if (c.description !== undefined && typeof c.description !== "string") {
      throw new Error(`${where}[${i}].description: expected a string, got ${typeof c.description}`);
    }
    if (seen.has(c.code)) throw new Error(`${where}[${i}]: duplicate code '${c.code}'`);
    seen.add(c.code);
  });
}

/** "S1: name\n" or, with a description, "S1: name\ndescription\n" (llama-recipes build_custom_prompt, with_policy). */
export function categoryLines(cats: readonly GuardCategory[]): string {
  return cats.map((c) => `${c.code}: ${c.name}${c.description ? `\n${c.description}` : ""}\n`).join("");
}

function checkConversation(messages: readonly GuardMessage[]): void {
  if (!Array.isArray(messages) || messages.length === 0) throw new Error("guard: the conversation is empty");
  messages.forEach((m, i) => {
    const want = i % 2 === 0 ? "user" : "assistant";
    if (m?.role !== want) {
      throw new Error(`guard: messages[${i}] must be '${want}' (roles alternate user/assistant/..., starting with user), got '${m?.role}'`);
    }
    if (typeof m.content !== "string") throw new Error(`guard: messages[${i}].content must be a string`);
  });
}

const TASK = (role: string) =>
  `Task: Check if there is unsafe content in '${role}' messages in conversations according our safety policy with the below categories.\n\n`;
const INSTRUCTIONS = (role: string) =>
  `Provide your safety assessment for ONLY THE LAST ${role} message in the above conversation:\n` +
  ` - First line must read 'safe' or 'unsafe'.\n` +
  ` - If unsafe, a second line must include a comma-separated list of violated categories.`;

/**
 * The exact prompt text for `messages` (alternating, starting with the user). The judged role follows the published
 * templates: an odd number of messages judges the last 'User' message, an even number the last 'Agent' message.
 */
export function buildGuardPrompt(messages: readonly GuardMessage[], opts: GuardPromptOptions): string {
  checkConversation(messages);
  const role = messages.length % 2 === 0 ? "Agent" : "User";
  const cats = categoryLines(effectiveCategories(opts));
  const conversation = messages.map((m) => `${m.role === "user" ? "User" : "Agent"}: ${m.content.trim()}\n\n`).join("");
  const body =
    TASK(role) +
    `<BEGIN UNSAFE CONTENT CATEGORIES>\n${cats}<END UNSAFE CONTENT CATEGORIES>\n\n` +
    `<BEGIN CONVERSATION>\n\n${conversation}<END CONVERSATION>\n\n` +
    INSTRUCTIONS(role);
  switch (opts.format) {
    // The 8B template opens with a space before <|begin_of_text|>; kept, since the model was tuned on that text.
    case "llama-guard-3":
      return ` <|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n${body}<|eot_id|><|start_header_id|>assistant<|end_header_id|>`;
    case "llama-guard-3-1b":
      return `<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n${body} <|eot_id|><|start_header_id|>assistant<|end_header_id|>`;
    case "llama-guard-2":
      return `[INST] ${body} [/INST]`;
    default:
      throw new Error(`guard: unknown format '${String(opts.format)}' (expected ${GUARD_FORMATS.join(", ")})`);
  }
}

/** A chat turn as the server and CLI receive it (OpenAI shape). */
export interface ChatTurn {
  role: string;
  content?: string | null | ReadonlyArray<Record<string, unknown>>;
  tool_calls?: unknown; // an assistant turn may carry only tool calls (content null)
}

/** A turn's text; null for an assistant turn that only calls tools (no text to show the guard). */
function textOf(m: ChatTurn, i: number): string | null {
  const calls = Array.isArray(m.tool_calls) && m.tool_calls.length > 0;
  if (typeof m.content === "string") return m.content === "" && calls ? null : m.content;
  if (m.content === null || m.content === undefined) {
    // judging a missing text as "" would call a broken request safe
    if (m.role === "assistant" && calls) return null;
    throw new Error(`guard: messages[${i}].content is required (a ${m.role} turn without text cannot be judged), got ${m.content === null ? "null" : "none"}`);
  }
  if (Array.isArray(m.content)) {
    return m.content
      .map((p, j) => {
        if (p?.type === "text" && typeof p.text === "string") return p.text;
        throw new Error(`guard: messages[${i}].content[${j}]: only text parts can be judged, got type '${String(p?.type)}'`);
      })
      .join("");
  }
  throw new Error(`guard: messages[${i}].content must be a string or a list of text parts`);
}

/**
 * The conversation the guard judges for `role` (Meta's usage): 'user' = everything up to the last user message,
 * 'agent' = up to the last assistant message. System/developer/tool turns are not shown to the guard, consecutive turns
 * of one role are joined with a blank line, and assistant turns before the first user turn are dropped.
 */
/** Chat roles a conversation may hold (OpenAI's, and Llama 3's ipython); the guard sees only user and assistant turns. */
const CHAT_ROLES = ["system", "developer", "user", "assistant", "tool", "function", "ipython"];

export function guardConversation(messages: readonly ChatTurn[], role: GuardRole): GuardMessage[] {
  if (!Array.isArray(messages)) throw new Error("guard: messages must be an array");
  if (role !== "user" && role !== "agent") throw new Error(`guard: role must be 'user' or 'agent', got '${String(role)}'`);
  const turns: { role: "user" | "assistant"; content: string }[] = [];
  messages.forEach((m, i) => {
    if (m === null || typeof m !== "object" || typeof m.role !== "string") {
      throw new Error(`guard: messages[${i}] must be an object with a string 'role'`);
    }
    if (!CHAT_ROLES.includes(m.role)) {
      throw new Error(`guard: messages[${i}].role must be one of ${CHAT_ROLES.join(", ")}, got ${JSON.stringify(m.role)}`);
    }
    if (m.role !== "user" && m.role !== "assistant") return;
    const text = textOf(m, i);
    if (text === null) return;
    const last = turns[turns.length - 1];
    if (last && last.role === m.role) last.content = `${last.content}\n\n${text}`;
    else if (m.role === "user" || turns.length > 0) turns.push({ role: m.role, content: text });
  });
  const want = role === "user" ? "user" : "assistant";
  let end = turns.length;
  while (end > 0 && turns[end - 1].role !== want) end--;
  if (end === 0) throw new Error(`guard: no ${want} message to judge for role '${role}'`);
  return turns.slice(0, end);
}

/**
 * Which Llama Guard prompt a chat template writes, from its fixed text; null when it is not a Llama Guard template.
 * 3-1B reads `categories` and `excluded_category_keys`; Llama Guard 2 uses [INST]; otherwise Llama Guard 3.
 */
export function detectGuardFormat(templateSource: string): GuardFormat | null {
  if (!templateSource.includes("<BEGIN UNSAFE CONTENT CATEGORIES>")) return null;
  if (templateSource.includes("[INST]")) return "llama-guard-2";
  if (/excluded_category_keys/.test(templateSource)) return "llama-guard-3-1b";
  return "llama-guard-3";
}
