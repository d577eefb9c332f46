// Builds models/floe-brown-tools, a LoRA adapter that teaches models/floe-brown to choose tools by itself (tool_choice "auto").
// Usage: node --import tsx scripts/make-tool-model.ts [all|data|train|export|eval]   (stages resume)
//   data     scripts/make-tool-data.ts, seed 0 -> data/tools/{train,heldout}.jsonl (OpenAI fine-tuning format:
//            {"messages", "tools"}; `floe finetune` renders them through floe-brown's chat template with the tools, the
//            loss on the assistant turns only: the call, the answer after the tool result, or plain chit-chat text)
//   train    floe finetune LoRA (TRAIN_ARGS below), 1 thread, resumable from its last checkpoint
//   export   the final adapter (PEFT: adapter_config.json + adapter_model.safetensors) -> models/floe-brown-tools
//   eval     bench/tool-eval.ts: base vs adapter on the held-out split through floe serve, tool_choice "auto", no
//            constraint -> data/work/floe-brown-tools/eval.json
import { copyFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { makeToolData, trainingLine } from "./make-tool-data.js";
import { pretrain as trainStage } from "./pretrain-stage.js";
import { packageRoot } from "../src/model/builtin.js";

const ROOT = packageRoot();
const DATA = join(ROOT, "data", "tools");
const WORK = join(ROOT, "data", "work", "floe-brown-tools"); // git-ignored intermediates
const BASE = join(ROOT, "models", "floe-brown");
const RUN = join(WORK, "train");
export const ADAPTER = join(ROOT, "models", "floe-brown-tools");
export const SEED = 0;

/** Training: the exact `floe finetune` arguments. */
export const TRAIN_STEPS = 300;
export const TRAIN_ARGS = [
  "--lora-rank", "16", "--lora-alpha", "32", "--lr", "2e-3", "--warmup-steps", "10", "--lr-schedule", "cosine", "--batch-tokens", "4096",
  "--max-seq-len", "1024", "--weight-decay", "0", "--max-grad-norm", "1", "--save-steps", "50", "--save-total-limit", "1", "--eval-steps", "100",
  "--seed", String(SEED), "--backend", "native", "--threads", "1",
];

const log = (s: string) => process.stderr.write(`[make-tool-model] ${s}\n`);

function data(): void {
  const d = makeToolData({ seed: SEED });
  mkdirSync(DATA, { recursive: true });
  for (const split of ["train", "heldout"] as const) {
    writeFileSync(join(DATA, `${split}.jsonl`), d[split].map((r) => JSON.stringify(r)).join("\n") + "\n");
    log(`${split}: ${d[split].length} rows -> ${join(DATA, `${split}.jsonl`)}`);
  }
  writeFileSync(join(WORK, "train-chat.jsonl"), d.train.map(trainingLine).join("\n") + "\n");
  // The trainer's periodic eval: every 4th held-out row (60).
  writeFileSync(join(WORK, "heldout-small-chat.jsonl"), d.heldout.filter((_, i) => i % 4 === 0).map(trainingLine).join("\n") + "\n");
}

async function train(): Promise<void> {
  await trainStage({ init: BASE, data: join(WORK, "train-chat.jsonl"), eval: join(WORK, "heldout-small-chat.jsonl"), run: RUN, steps: TRAIN_STEPS, args: TRAIN_ARGS, log });
}

function exportAdapter(): void {
  const final = join(RUN, "final");
  if (!existsSync(join(final, "adapter_model.safetensors"))) throw new Error(`${final}: no trained adapter yet (run the train stage)`);
  mkdirSync(ADAPTER, { recursive: true });
  copyFileSync(join(final, "adapter_model.safetensors"), join(ADAPTER, "adapter_model.safetensors"));
  // the base as a path relative to the package, not this machine's
  const config = JSON.parse(readFileSync(join(final, "adapter_config.json"), "utf8")) as Record<string, unknown>;
  writeFileSync(join(ADAPTER, "adapter_config.json"), JSON.stringify({ ...config, base_model_name_or_path: "models/floe-brown" }, null, 2) + "\n");
  log(`exported -> ${ADAPTER}`);
}

async function evaluate(): Promise<void> {
  const { evaluateTools, formatToolReport } = await import("../bench/tool-eval.js");
  const report = await evaluateTools({ base: BASE, adapter: ADAPTER, heldout: join(DATA, "heldout.jsonl") });
  writeFileSync(join(WORK, "eval.json"), JSON.stringify(report, null, 1) + "\n");
  process.stdout.write(formatToolReport(report) + "\n");
}

const stages: Record<string, () => Promise<void> | void> = { data, train, export: exportAdapter, eval: evaluate };

if (process.argv[1] && import.meta.url === new URL(`file://${process.argv[1]}`).href) {
  const which = process.argv[2] ?? "all";
  mkdirSync(WORK, { recursive: true });
  if (which === "all") {
    for (const k of ["data", "train", "export", "eval"]) { log(`stage ${k}`); await stages[k]!(); }
  } else if (stages[which]) await stages[which]!();
  else throw new Error(`unknown stage '${which}'; expected all or one of ${Object.keys(stages).join(", ")}`);
}
