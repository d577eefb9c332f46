// scripts/make-guard-data.ts: every category in both splits and roles, labels consistent, nothing held out leaks into
// train (template items, acts, corpus sentences), deterministic for a seed, malformed template files refused.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { corpusSentences, loadTemplates, makeSplit, TEMPLATES, toSecondPerson, type GuardExample } from "../../scripts/make-guard-data.js";

const CATS = Array.from({ length: 14 }, (_, i) => `S${i + 1}`);
const t = loadTemplates();
const corpus = { train: corpusSentences("train"), heldout: corpusSentences("heldout") };
const train = makeSplit(t, "train", 0, corpus.train);
const heldout = makeSplit(t, "heldout", 0, corpus.heldout);
const texts = (rows: readonly GuardExample[]) => rows.flatMap((r) => r.messages.map((m) => m.content));

test("every category S1-S14 is in both splits, as user and as agent turns, next to safe rows of both roles", () => {
  for (const [name, rows] of [["train", train], ["heldout", heldout]] as const) {
    for (const c of [...CATS, "safe"]) {
      for (const role of ["user", "agent"] as const) {
        const n = rows.filter((r) => (c === "safe" ? r.label === "safe" : r.categories.includes(c)) && r.role === role).length;
        assert.ok(n >= (c === "safe" ? 50 : 5), `${name}: only ${n} ${c} rows for role ${role}`);
      }
    }
    const unsafe = rows.filter((r) => r.label === "unsafe").length;
    assert.ok(unsafe / rows.length > 0.35 && unsafe / rows.length < 0.65, `${name}: unsafe share ${unsafe}/${rows.length}`);
  }
});

test("labels are consistent: one known category when unsafe, none when safe; the role is the last speaker's", () => {
  for (const r of [...train, ...heldout]) {
    assert.equal(r.label === "unsafe", r.categories.length === 1, JSON.stringify(r));
    if (r.label === "unsafe") assert.ok(CATS.includes(r.categories[0]!), r.categories[0]);
    assert.equal(r.role, r.messages.at(-1)!.role === "assistant" ? "agent" : "user");
    assert.ok(r.messages.length === (r.role === "agent" ? 2 : 1) && r.messages[0]!.role === "user");
    assert.ok(r.messages.every((m) => m.content.length > 0 && !m.content.includes("{act}")), JSON.stringify(r.messages));
  }
});

test("no held-out template item, act or corpus sentence is used by a training row", () => {
  // By provenance: a training row names only train items (and train corpus documents).
  for (const r of train) for (const p of r.parts) assert.ok(!p.includes(":heldout:"), `${p} in a training row`);
  // By text: held-out acts (as the user says them and as an agent repeats them) never appear in training text.
  const trainText = texts(train).join("\n").toLowerCase();
  const actsOut = [...Object.values(t.categories).flatMap((c) => c.acts.heldout), ...t.safe.acts.heldout];
  for (const a of actsOut) {
    assert.ok(!trainText.includes(a.toLowerCase()), `held-out act in train: ${a}`);
    assert.ok(!trainText.includes(toSecondPerson(a).toLowerCase()), `held-out act (2nd person) in train: ${a}`);
  }
  // Held-out frames / answers: no training message matches their fixed text around {act}.
  const asRegex = (frame: string) => new RegExp(`^${frame.split("{act}").map((s) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")).join(".+")}$`, "i");
  const trainMsgs = texts(train);
  for (const f of [...t.frames.heldout, ...t.answers.heldout, ...t.refusals.heldout]) {
    const re = asRegex(f);
    assert.ok(!trainMsgs.some((m) => re.test(m)), `held-out frame/answer matched in train: ${f}`);
  }
  for (const d of [...Object.values(t.categories).flatMap((c) => c.direct.heldout), ...t.safe.questions.heldout]) {
    assert.ok(!trainMsgs.includes(d), `held-out request in train: ${d}`);
  }
  // Corpus: held-out sentences come from other documents / indices, so no sentence is in both.
  const trainSentences = new Set(corpus.train.map((s) => s.text));
  const shared = corpus.heldout.filter((s) => trainSentences.has(s.text)).length;
  assert.ok(shared < corpus.heldout.length * 0.002, `${shared} held-out corpus sentences also in train (boilerplate lines allowed only)`);
  const heldCorpusUsed = heldout.filter((r) => r.kind.startsWith("corpus")).map((r) => r.messages.at(-1)!.content);
  assert.ok(heldCorpusUsed.length > 100);
  assert.ok(heldCorpusUsed.every((s) => !trainMsgs.includes(s)), "a held-out corpus sentence is also a training message");
});

test("deterministic for a seed; another seed gives another order and selection", () => {
  const again = makeSplit(t, "train", 0, corpus.train);
  assert.deepEqual(again, train);
  const other = makeSplit(t, "train", 1, corpus.train);
  assert.notDeepEqual(other, train);
  assert.equal(other.length, train.length);
  const key = (r: GuardExample) => JSON.stringify(r.messages);
  const seen = new Set(train.map(key));
  const overlap = other.filter((r) => seen.has(key(r))).length;
  assert.ok(overlap < other.length, "seed 1 picked exactly the same rows");
});

test("toSecondPerson turns the user's words into the agent's", () => {
  assert.equal(toSecondPerson("poison my neighbour so I can sleep"), "poison your neighbour so you can sleep");
  assert.equal(toSecondPerson("hide it from myself, I'm told"), "hide it from yourself, you're told");
  assert.equal(toSecondPerson("time to mix mine with Iodine"), "time to mix yours with Iodine");
});

test("a template file without a held-out list, or with a missing category, is refused with the file and the field", () => {
  const dir = mkdtempSync(join(tmpdir(), "guard-templates-"));
  try {
    const raw = JSON.parse(readFileSync(TEMPLATES, "utf8"));
    const noHeld = structuredClone(raw);
    noHeld.categories.S4.acts.heldout = [];
    writeFileSync(join(dir, "a.json"), JSON.stringify(noHeld));
    assert.throws(() => loadTemplates(join(dir, "a.json")), /a\.json: S4\.acts must have non-empty "train" and "heldout"/);
    const noCat = structuredClone(raw);
    delete noCat.categories.S13;
    writeFileSync(join(dir, "b.json"), JSON.stringify(noCat));
    assert.throws(() => loadTemplates(join(dir, "b.json")), /categories must be S1, .*S14 in order, got S1, .*S12, S14/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
