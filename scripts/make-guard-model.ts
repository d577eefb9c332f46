// Builds models/floe-guard, the demo Llama Guard 3-format safety classifier, by fully fine-tuning models/floe-brown.
// Usage: node --import tsx scripts/make-guard-model.ts [all|data|base|prompts|train|export|eval]   (stages resume)
//   data     scripts/make-guard-data.ts, seed 0 -> data/guard/{train,heldout}.jsonl (conversations + labels)
//   base     floe-brown with a pass-through training template (data/guard/train_template.jinja)
//   prompts  every conversation rendered by the guard's chat template (data/guard/chat_template.jinja: the Llama
//            Guard 3 prompt) -> data/work/floe-guard/{train,heldout}-chat.jsonl as {"messages":[{user: prompt},
//            {assistant: "\n\nsafe" | "\n\nunsafe\nS<k>"}]}: the trainer encodes the prompt without adding a BOS
//            (the published prompt starts " <|begin_of_text|>"), exactly as the guard runtime does, and puts the loss
//            on the verdict and its <|eot_id|> only
//   train    floe finetune --full (TRAIN_ARGS below), resumable from its last checkpoint
//   export   the final checkpoint with the guard's chat template -> models/floe-guard (its README.md is kept)
//   eval     bench/guard-eval.ts on the held-out split -> data/work/floe-guard/eval.json
// Made on 2026-12-03 on the shared 2-core development VM (AMD EPYC, load 15-20 from other engineers' jobs): data 3 s,
// prompts 10 s, train 330 steps / 1.25 M tokens in 38 min (551 tok/s), eval 81 s. Deterministic for the data; the
// trained weights depend on the native kernels' thread count only through float rounding.
import { cpSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { makeGuardData, summarize, type GuardExample } from "./make-guard-data.js";
import { pretrain as trainStage } from "./pretrain-stage.js";
import { ChatTemplate } from "../src/formats/chat-template.js";
import { packageRoot } from "../src/model/builtin.js";

const ROOT = packageRoot();
const DATA = join(ROOT, "data", "guard");
const WORK = join(ROOT, "data", "work", "floe-guard"); // git-ignored intermediates
const SOURCE = join(ROOT, "models", "floe-brown");
const BASE = join(WORK, "base");
const RUN = join(WORK, "train");
export const MODEL = join(ROOT, "models", "floe-guard");
export const TEMPLATE = join(DATA, "chat_template.jinja");
const TRAIN_TEMPLATE = join(DATA, "train_template.jinja");
export const SEED = 0;

/** Training: the exact `floe finetune` arguments (about 1.1 epochs of the ~2,750 training prompts, ~410 tokens each). */
export const TRAIN_STEPS = 330;
export const TRAIN_ARGS = [
  "--full", "--lr", "1e-3", "--warmup-steps", "20", "--lr-schedule", "cosine", "--batch-tokens", "4096", "--max-seq-len", "512",
  "--weight-decay", "0", "--max-grad-norm", "1", "--save-steps", "30", "--save-total-limit", "1", "--eval-steps", "110",
  "--seed", String(SEED), "--backend", "native",
];

const log = (s: string) => process.stderr.write(`[make-guard-model] ${s}\n`);
const readRows = (file: string): GuardExample[] => readFileSync(file, "utf8").split("\n").filter((l) => l.trim()).map((l) => JSON.parse(l) as GuardExample);

/** The verdict a guard must write for a row: "safe" or "unsafe\nS<k>[,S<j>]" (after the "\n\n" that opens its turn). */
export const target = (r: Pick<GuardExample, "label" | "categories">): string => (r.label === "safe" ? "safe" : `unsafe\n${r.categories.join(",")}`);

/** tokenizer_config.json of floe-brown with another chat template. */
function tokenizerConfig(template: string): string {
  const tc = JSON.parse(readFileSync(join(SOURCE, "tokenizer_config.json"), "utf8")) as Record<string, unknown>;
  tc.chat_template = readFileSync(template, "utf8");
  return JSON.stringify(tc, null, 2) + "\n";
}

function data(): void {
  const d = makeGuardData({ seed: SEED });
  mkdirSync(DATA, { recursive: true });
  for (const split of ["train", "heldout"] as const) {
    writeFileSync(join(DATA, `${split}.jsonl`), d[split].map((r) => JSON.stringify(r)).join("\n") + "\n");
    log(`${split}: ${d[split].length} rows ${JSON.stringify(summarize(d[split]))}`);
  }
}

function base(): void {
  mkdirSync(BASE, { recursive: true });
  for (const f of ["config.json", "model.safetensors", "tokenizer.json"]) cpSync(join(SOURCE, f), join(BASE, f));
  writeFileSync(join(BASE, "tokenizer_config.json"), tokenizerConfig(TRAIN_TEMPLATE));
  const gc = JSON.parse(readFileSync(join(SOURCE, "generation_config.json"), "utf8")) as Record<string, unknown>;
  // A classifier decodes greedily; "\n\nunsafe\nS14<|eot_id|>" is 10 tokens.
  writeFileSync(join(BASE, "generation_config.json"), JSON.stringify({ bos_token_id: gc.bos_token_id, eos_token_id: gc.eos_token_id, do_sample: false, max_new_tokens: 16 }, null, 2) + "\n");
  log(`base -> ${BASE}`);
}

/** One training line: the guard prompt as a user message, the verdict as the assistant's (see train_template.jinja). */
export function trainingMessages(t: ChatTemplate, r: GuardExample): { messages: { role: string; content: string }[] } {
  return { messages: [{ role: "user", content: t.render(r.messages) }, { role: "assistant", content: `\n\n${target(r)}` }] };
}

function prompts(): void {
  const t = new ChatTemplate(readFileSync(TEMPLATE, "utf8"), TEMPLATE);
  for (const split of ["train", "heldout"] as const) {
    const rows = readRows(join(DATA, `${split}.jsonl`));
    const lines = rows.map((r) => JSON.stringify(trainingMessages(t, r)));
    writeFileSync(join(WORK, `${split}-chat.jsonl`), lines.join("\n") + "\n");
    // The trainer's periodic eval: every 6th held-out row (~150).
    if (split === "heldout") writeFileSync(join(WORK, "heldout-small-chat.jsonl"), lines.filter((_, i) => i % 6 === 0).join("\n") + "\n");
    log(`${split}: ${rows.length} prompts -> ${join(WORK, `${split}-chat.jsonl`)}`);
  }
}

async function train(): Promise<void> {
  await trainStage({ init: BASE, data: join(WORK, "train-chat.jsonl"), eval: join(WORK, "heldout-small-chat.jsonl"), run: RUN, steps: TRAIN_STEPS, args: TRAIN_ARGS, log });
}

function exportModel(): void {
  const final = join(RUN, "final");
  if (!existsSync(join(final, "model.safetensors"))) throw new Error(`${final}: no trained model yet (run the train stage)`);
  const readme = existsSync(join(MODEL, "README.md")) ? readFileSync(join(MODEL, "README.md"), "utf8") : null;
  rmSync(MODEL, { recursive: true, force: true });
  mkdirSync(MODEL, { recursive: true });
  for (const f of ["config.json", "model.safetensors", "tokenizer.json", "generation_config.json"]) {
    cpSync(existsSync(join(final, f)) ? join(final, f) : join(BASE, f), join(MODEL, f));
  }
  writeFileSync(join(MODEL, "tokenizer_config.json"), tokenizerConfig(TEMPLATE));
  if (readme !== null) writeFileSync(join(MODEL, "README.md"), readme);
  log(`exported -> ${MODEL}`);
}

async function evaluate(): Promise<void> {
  const { evaluateGuard, formatReport } = await import("../bench/guard-eval.js");
  const report = await evaluateGuard(MODEL, join(DATA, "heldout.jsonl"));
  writeFileSync(join(WORK, "eval.json"), JSON.stringify(report, null, 1) + "\n");
  process.stdout.write(formatReport(report) + "\n");
}

const stages: Record<string, () => Promise<void> | void> = { data, base, prompts, train, export: exportModel, eval: evaluate };

if (process.argv[1] && import.meta.url === new URL(`file://${process.argv[1]}`).href) {
  const which = process.argv[2] ?? "all";
  mkdirSync(WORK, { recursive: true });
  if (which === "all") {
    for (const k of ["data", "base", "prompts", "train", "export", "eval"]) { log(`stage ${k}`); await stages[k]!(); }
  } else if (stages[which]) await stages[which]!();
  else throw new Error(`unknown stage '${which}'; expected all or one of ${Object.keys(stages).join(", ")}`);
}
