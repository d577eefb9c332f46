// Builds models/floe-brown from nothing: corpora -> BPE tokenizer -> random Llama -> pre-training on Brown -> held-out eval -> LoRA demo.
// Usage: node --import tsx scripts/make-default-model.ts [all|corpora|tokenizer|init|pretrain|export|eval|lora] (stages are resumable).
import { cpSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { pretrain as pretrainStage } from "./pretrain-stage.js";
import { prepareCorpora } from "../src/train/corpus.js";
import { writeInitModel, type InitModelOptions } from "../src/train/init-model.js";
import { run as floe } from "../src/cli/main.js";
import { openModel } from "../src/model/open.js";
import { heldOutLoss } from "../src/train/perplexity.js";
import { listCheckpoints } from "../src/train/checkpoint.js";
import { applyAdapter } from "../src/model/adapter.js";
import { packageRoot } from "../src/model/builtin.js";

const ROOT = packageRoot();
const DATA = join(ROOT, "data");
const WORK = join(DATA, "work", "floe-brown"); // intermediate files (git-ignored by data/.gitignore)
const MODEL = join(ROOT, "models", "floe-brown");
const TOK = join(WORK, "tokenizer");
const INIT = join(WORK, "init");
const RUN = join(WORK, "pretrain");
const LORA = join(WORK, "lora-nlp");

/** The architecture: Llama 3 layout at small scale (GQA 8/4 heads, tied embeddings), ~5.5M parameters. */
export const ARCH = { vocabSize: 4096, hiddenSize: 256, intermediateSize: 704, numLayers: 6, numHeads: 8, numKvHeads: 4, maxPositionEmbeddings: 1024, ropeTheta: 10000 };
const MAX_SEQ_LEN = 256;

/** Pre-training: the exact `floe finetune --full` arguments (cosine decay to 0 after warmup). */
export const PRETRAIN_ARGS = [
  "--full", "--lr", "2e-3", "--warmup-steps", "100", "--lr-schedule", "cosine", "--batch-tokens", "4096",
  "--max-seq-len", String(MAX_SEQ_LEN), "--weight-decay", "0.1", "--max-grad-norm", "1", "--save-steps", "100", "--save-total-limit", "2",
  "--eval-steps", "250", "--seed", "0", "--backend", "native",
];

/** LoRA demo: the exact `floe finetune` arguments that adapt the model to the nlp-corpus register (all seven targets). */
export const LORA_ARGS = [
  "--lora-rank", "16", "--lora-alpha", "32", "--max-steps", "40", "--lr", "2e-3", "--warmup-steps", "5", "--lr-schedule", "cosine",
  "--batch-tokens", "4096", "--max-seq-len", String(MAX_SEQ_LEN), "--save-steps", "20", "--save-total-limit", "1", "--seed", "0", "--backend", "native",
];

const log = (s: string) => process.stderr.write(`[make-default-model] ${s}\n`);

async function corpora(): Promise<void> {
  const r = await prepareCorpora(DATA);
  for (const [p, c] of Object.entries(r.counts)) log(`${p}: ${c.records} records, ${c.chars} chars`);
  // A small slice of the Brown held-out split for the trainer's periodic eval (the full split is measured at the end).
  for (const [file, n] of [[r.brownHeldOut, 60], [r.nlpHeldOut, 300]] as const) {
    const held = readFileSync(file, "utf8").split("\n").filter((l) => l.trim()).slice(0, n);
    writeFileSync(file.replace(/\.jsonl$/, "-small.jsonl"), held.join("\n") + "\n");
  }
}

async function tokenizer(): Promise<void> {
  const rc = await floe(["tokenizer", "train", "--data", join(DATA, "brown", "train.jsonl"), "--vocab-size", String(ARCH.vocabSize), "--out", TOK]);
  if (rc !== 0) throw new Error(`floe tokenizer train exited with ${rc}`);
}

function init(): void {
  const tj = JSON.parse(readFileSync(join(TOK, "tokenizer.json"), "utf8")) as { added_tokens: { id: number; content: string }[] };
  const idOf = (t: string) => tj.added_tokens.find((a) => a.content === t)!.id;
  const opts: InitModelOptions = {
    ...ARCH, tieWordEmbeddings: true, seed: 0, initStd: 0.02,
    bosTokenId: idOf("<|begin_of_text|>"), eosTokenIds: [idOf("<|end_of_text|>"), idOf("<|eot_id|>")],
  };
  writeInitModel(INIT, opts, TOK);
  log(`random model -> ${INIT}`);
}

/** Pre-training: one cosine run over ~8 epochs of the Brown training split (4096-token batches); resumable. */
export const PRETRAIN_STEPS = 3000;

async function pretrain(): Promise<void> {
  await pretrainStage({ init: INIT, data: join(DATA, "brown", "train.jsonl"), eval: join(DATA, "brown", "heldout-small.jsonl"), run: RUN,
    steps: PRETRAIN_STEPS, args: PRETRAIN_ARGS, log });
}

function exportModel(): void {
  const final = join(RUN, "final");
  if (!existsSync(join(final, "model.safetensors"))) throw new Error(`${final}: no trained model yet (run the pretrain stage)`);
  rmSync(MODEL, { recursive: true, force: true });
  mkdirSync(MODEL, { recursive: true });
  for (const f of ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "generation_config.json"]) {
    const src = existsSync(join(final, f)) ? join(final, f) : join(INIT, f);
    cpSync(src, join(MODEL, f));
  }
  log(`exported -> ${MODEL}`);
}

function jsonlTexts(file: string): string[] {
  return readFileSync(file, "utf8").split("\n").filter((l) => l.trim()).map((l) => (JSON.parse(l) as { text: string }).text);
}

type EvalReport = Record<string, { loss: number; perplexity: number; tokens: number }>;

/** Held-out loss on both registers through the inference path, optionally with a LoRA adapter applied. */
async function evalModel(dir: string, adapter?: string): Promise<EvalReport> {
  const opened = await openModel(dir);
  const model = adapter === undefined ? opened.model : applyAdapter(opened.model, adapter);
  const out: EvalReport = {};
  for (const [name, file] of [["brown", join(DATA, "brown", "heldout.jsonl")], ["nlp-corpus", join(DATA, "nlp-corpus", "heldout.jsonl")]] as const) {
    const r = heldOutLoss(model, opened.tokenizer!, jsonlTexts(file), { maxSeqLen: MAX_SEQ_LEN });
    out[name] = { loss: r.loss, perplexity: r.perplexity, tokens: r.tokens };
    log(`${dir}${adapter ? ` + ${adapter}` : ""}: ${name} held-out loss ${r.loss.toFixed(4)}, perplexity ${r.perplexity.toFixed(2)} over ${r.tokens} tokens`);
  }
  opened.loaded.dispose();
  return out;
}

async function lora(): Promise<void> {
  const resume = listCheckpoints(LORA).length > 0 ? ["--resume", LORA] : ["--overwrite"];
  const args = ["finetune", "--model", MODEL, "--data", join(DATA, "nlp-corpus", "train.jsonl"), "--eval", join(DATA, "nlp-corpus", "heldout-small.jsonl"),
    ...LORA_ARGS, "--out", LORA, ...resume];
  log(`floe ${args.join(" ")}`);
  const rc = await floe(args);
  if (rc !== 0) throw new Error(`floe finetune exited with ${rc}`);
  const evalFile = join(WORK, "eval.json");
  const before = existsSync(evalFile) ? (JSON.parse(readFileSync(evalFile, "utf8")) as EvalReport) : await evalModel(MODEL);
  const after = await evalModel(MODEL, join(LORA, "final"));
  writeFileSync(join(WORK, "lora-report.json"), JSON.stringify({ before, after }, null, 1) + "\n");
}

const stages: Record<string, () => Promise<void> | void> = {
  corpora, tokenizer, init, pretrain, export: exportModel,
  eval: async () => { writeFileSync(join(WORK, "eval.json"), JSON.stringify(await evalModel(MODEL), null, 1) + "\n"); },
  lora,
};

const which = process.argv[2] ?? "all";
mkdirSync(WORK, { recursive: true });
if (which === "all") {
  for (const k of ["corpora", "tokenizer", "init", "pretrain", "export", "eval", "lora"]) {
    log(`stage ${k}`);
    await stages[k]!();
  }
} else if (stages[which]) await stages[which]!();
else throw new Error(`unknown stage '${which}'; expected all or one of ${Object.keys(stages).join(", ")}`);
