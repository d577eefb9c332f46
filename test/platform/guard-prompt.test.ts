// Guard prompt tests: Meta's published Llama Guard chat templates, rendered by @huggingface/jinja, equal floe's builder byte for byte.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { Template } from "@huggingface/jinja";
import {
  buildGuardPrompt, guardConversation, detectGuardFormat, defaultCategories, effectiveCategories,
  type GuardFormat, type GuardMessage, type GuardCategory,
} from "../../src/platform/guard/prompt.js";
import { repoUrl } from "../repo.js";

const fixture = (name: string) => readFileSync(repoUrl(`test/fixtures/guard/${name}.chat_template.jinja`), "utf8");
const PUBLISHED: Record<GuardFormat, string> = {
  "llama-guard-3": fixture("llama-guard-3-8b"),
  "llama-guard-3-1b": fixture("llama-guard-3-1b"),
  "llama-guard-2": fixture("llama-guard-2-8b"),
};

/**
 * The 8B and Guard 2 templates hard-code their table. To check custom lists and exclusions against them, the literal
 * table is replaced by the 3-1B template's own loop (key + ": " + categories[key] + "\n", skipping excluded keys); the
 * first test proves the replacement renders the default table identically.
 */
function generalize(format: GuardFormat): string {
  const src = PUBLISHED[format];
  if (format === "llama-guard-3-1b") return src;
  const block = defaultCategories(format).map((c) => `${c.code}: ${c.name}\n`).join("");
  assert.ok(src.includes(block), `${format}: the published template holds the default table verbatim`);
  const loop = `" }}{% for key in categories %}{% if key not in excluded_category_keys %}{{ key + ": " + categories[key] + "\\n" }}{% endif %}{% endfor %}{{ "`;
  return src.replace(block, loop);
}

/** Render a template as transformers' apply_chat_template would (3-1B wants content as a list of text parts). */
function render(src: string, format: GuardFormat, messages: readonly GuardMessage[], cats?: readonly GuardCategory[], exclude: readonly string[] = []): string {
  const vars: Record<string, unknown> = {
    messages: messages.map((m) => ({ role: m.role, content: format === "llama-guard-3-1b" ? [{ type: "text", text: m.content }] : m.content })),
    excluded_category_keys: [...exclude],
    bos_token: "<|begin_of_text|>",
    eos_token: "<|eot_id|>",
  };
  if (cats) vars.categories = Object.fromEntries(cats.map((c) => [c.code, c.description ? `${c.name}\n${c.description}` : c.name]));
  return new Template(src).render(vars);
}

// Fresh text each run: padding the templates trim, punctuation, newlines inside, non-ASCII.
const WORDS = ["how", "do I", "bake", "bread?", "Ünïcödé", "naïve", "'quoted'", "\"dq\"", "{{ not jinja }}", "tab\there", "line\nbreak", "🙂"];
function randomText(): string {
  const n = 1 + Math.floor(Math.random() * 8);
  const pad = () => [" ", "\n", "  ", "\t", ""][Math.floor(Math.random() * 5)];
  return pad() + Array.from({ length: n }, () => WORDS[Math.floor(Math.random() * WORDS.length)]).join(" ") + pad();
}
function conversation(turns: number): GuardMessage[] {
  return Array.from({ length: turns }, (_, i) => ({ role: i % 2 === 0 ? "user" : "assistant", content: randomText() }) as const);
}

const FORMATS: GuardFormat[] = ["llama-guard-3", "llama-guard-3-1b", "llama-guard-2"];

for (const format of FORMATS) {
  test(`${format}: published template = builder, user role (1, 3 turns) and agent role (2, 4 turns)`, () => {
    for (const turns of [1, 2, 3, 4]) {
      const msgs = conversation(turns);
      const want = render(PUBLISHED[format], format, msgs);
      assert.equal(buildGuardPrompt(msgs, { format }), want, `${format}, ${turns} turns`);
      assert.ok(want.includes(`ONLY THE LAST ${turns % 2 ? "User" : "Agent"} message`));
    }
  });

  test(`${format}: the generalized template renders the default table exactly as the published one`, () => {
    const msgs = conversation(2);
    assert.equal(render(generalize(format), format, msgs, defaultCategories(format)), render(PUBLISHED[format], format, msgs));
  });

  test(`${format}: exclusions (template's excluded_category_keys) = builder`, () => {
    const codes = defaultCategories(format).map((c) => c.code);
    const exclude = codes.filter(() => Math.random() < 0.4).slice(0, codes.length - 1);
    if (exclude.length === 0) exclude.push("S2");
    for (const turns of [1, 2]) {
      const msgs = conversation(turns);
      const want = render(generalize(format), format, msgs, format === "llama-guard-3-1b" ? undefined : defaultCategories(format), exclude);
      const got = buildGuardPrompt(msgs, { format, exclude });
      assert.equal(got, want);
      for (const code of exclude) assert.ok(!got.includes(`\n${code}: `), `${code} excluded`);
    }
  });

  test(`${format}: custom categories with and without descriptions, plus an exclusion = builder`, () => {
    const cats: GuardCategory[] = [
      { code: "S1", name: "Pineapple on pizza." },
      { code: "S2", name: "Cooking advice.", description: "AI models should not give recipes.\n - including bread" },
      { code: "S3", name: "Rude words" },
    ];
    for (const turns of [3, 4]) {
      const msgs = conversation(turns);
      assert.equal(buildGuardPrompt(msgs, { format, categories: cats }), render(generalize(format), format, msgs, cats));
      assert.equal(buildGuardPrompt(msgs, { format, categories: cats, exclude: ["S3"] }), render(generalize(format), format, msgs, cats, ["S3"]));
    }
  });

  test(`${format}: the template's format is detected from its text`, () => {
    assert.equal(detectGuardFormat(PUBLISHED[format]), format);
  });
}

test("a non-guard template is not a guard format; the user-role text of the 8B matches the model card's layout", () => {
  assert.equal(detectGuardFormat("{% for m in messages %}{{ m.content }}{% endfor %}"), null);
  const p = buildGuardPrompt([{ role: "user", content: "  I forgot how to kill a process in Linux, can you help?  " }], { format: "llama-guard-3" });
  assert.ok(p.startsWith(" <|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nTask: Check if there is unsafe content in 'User' messages"));
  assert.ok(p.includes("<BEGIN CONVERSATION>\n\nUser: I forgot how to kill a process in Linux, can you help?\n\n<END CONVERSATION>"));
  assert.ok(p.endsWith("categories.<|eot_id|><|start_header_id|>assistant<|end_header_id|>"));
});

test("bad input: unknown excluded code, non-alternating turns, empty list, duplicate codes", () => {
  const msgs = conversation(1);
  assert.throws(() => buildGuardPrompt(msgs, { format: "llama-guard-2", exclude: ["S14"] }), /cannot exclude category 'S14'.*have: S1, .*S11/);
  assert.throws(() => buildGuardPrompt([{ role: "assistant", content: "x" }], { format: "llama-guard-3" }), /messages\[0\] must be 'user'/);
  assert.throws(() => buildGuardPrompt([], { format: "llama-guard-3" }), /conversation is empty/);
  assert.throws(() => effectiveCategories({ format: "llama-guard-3", categories: [{ code: "S1", name: "a" }, { code: "S1", name: "b" }] }), /duplicate code 'S1'/);
  assert.throws(() => buildGuardPrompt(msgs, { format: "nope" as GuardFormat }), /unknown format 'nope'/);
});

test("guardConversation: user role cuts at the last user turn, agent role at the last answer; system/tool turns are not shown", () => {
  const chat = [
    { role: "system", content: "be nice" },
    { role: "assistant", content: "greeting before any user turn" },
    { role: "user", content: "a" },
    { role: "user", content: [{ type: "text", text: "b" }] },
    { role: "assistant", content: "c" },
    { role: "tool", content: "tool output" },
    { role: "user", content: "d" },
  ];
  assert.deepEqual(guardConversation(chat, "user"), [
    { role: "user", content: "a\n\nb" }, { role: "assistant", content: "c" }, { role: "user", content: "d" },
  ]);
  assert.deepEqual(guardConversation(chat, "agent"), [{ role: "user", content: "a\n\nb" }, { role: "assistant", content: "c" }]);
  assert.throws(() => guardConversation([{ role: "user", content: "hi" }], "agent"), /no assistant message to judge/);
  assert.throws(() => guardConversation([{ role: "user", content: [{ type: "image_url" }] }], "user"), /only text parts/);
  // an unknown role is named, not skipped (it said "no user message to judge" for [{role: "wizard", …}])
  assert.throws(() => guardConversation([{ role: "wizard", content: "hi" }], "user"), /messages\[0\]\.role must be one of system, developer, user, assistant, tool, function, ipython, got "wizard"/);
  assert.equal(guardConversation([{ role: "developer", content: "x" }, { role: "user", content: "hi" }], "user").length, 1);
});

test("guardConversation: a user or assistant turn without content is refused, not judged as empty; a tool-call-only answer is left out", () => {
  assert.throws(() => guardConversation([{ role: "user" }, { role: "assistant", content: "ok" }], "agent"), /messages\[0\]\.content is required/);
  assert.throws(() => guardConversation([{ role: "user", content: null }], "user"), /messages\[0\]\.content is required/);
  assert.throws(() => guardConversation([{ role: "user", content: "hi" }, { role: "assistant" }], "agent"), /messages\[1\]\.content is required/);
  const calls = [{ id: "c1", type: "function", function: { name: "f", arguments: "{}" } }];
  const chat = [
    { role: "user", content: "weather?" },
    { role: "assistant", content: null, tool_calls: calls },
    { role: "tool", content: "sunny" },
    { role: "assistant", content: "It is sunny." },
  ];
  assert.deepEqual(guardConversation(chat, "agent"), [{ role: "user", content: "weather?" }, { role: "assistant", content: "It is sunny." }]);
  assert.deepEqual(guardConversation([chat[0]!, { ...chat[1]!, content: "" }, chat[2]!, chat[3]!], "agent"), guardConversation(chat, "agent"));
  assert.equal(guardConversation([{ role: "user", content: "" }], "user")[0]!.content, "", "an explicit empty string is still text");
});
