// Builds models/floe-brown-draft: a 2-layer Llama sharing floe-brown's tokenizer, pre-trained on Brown, the draft for speculative decoding.
// Usage: node --import tsx scripts/make-draft-model.ts [all|init|pretrain|export|eval] (stages are resumable; needs data/brown from
// `node --import tsx scripts/make-default-model.ts corpora`).
import { cpSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { pretrain as pretrainStage } from "./pretrain-stage.js";
import { writeInitModel, type InitModelOptions } from "../src/train/init-model.js";
import { openModel } from "../src/model/open.js";
import { heldOutLoss } from "../src/train/perplexity.js";
import { packageRoot } from "../src/model/builtin.js";

const ROOT = packageRoot();
const DATA = join(ROOT, "data");
const TARGET = join(ROOT, "models", "floe-brown"); // the model it drafts for: its tokenizer files are copied
const WORK = join(DATA, "work", "floe-brown-draft"); // intermediate files (git-ignored by data/.gitignore)
const MODEL = join(ROOT, "models", "floe-brown-draft");
const INIT = join(WORK, "init");
const RUN = join(WORK, "pretrain");

/** The architecture: floe-brown's layout cut to 2 layers at hidden 128 (GQA 4/2 heads of 32, tied embeddings), ~0.9M parameters. */
export const DRAFT_ARCH = { vocabSize: 4096, hiddenSize: 128, intermediateSize: 352, numLayers: 2, numHeads: 4, numKvHeads: 2, maxPositionEmbeddings: 1024, ropeTheta: 10000 };
const MAX_SEQ_LEN = 256;

/** Pre-training: the exact `floe finetune --full` arguments; one thread, as the build machine is shared. */
export const DRAFT_PRETRAIN_ARGS = [
  "--full", "--lr", "3e-3", "--warmup-steps", "50", "--lr-schedule", "cosine", "--batch-tokens", "4096",
  "--max-seq-len", String(MAX_SEQ_LEN), "--weight-decay", "0.1", "--max-grad-norm", "1", "--save-steps", "50", "--save-total-limit", "2",
  "--eval-steps", "250", "--seed", "0", "--backend", "native", "--threads", "1",
];
/** ~10M tokens (about 6.5 epochs of the Brown training split); ~11 min at 15k tok/s on one core. */
export const DRAFT_PRETRAIN_STEPS = 2400;

const log = (s: string) => process.stderr.write(`[make-draft-model] ${s}\n`);

function init(): void {
  const tj = JSON.parse(readFileSync(join(TARGET, "tokenizer.json"), "utf8")) as { added_tokens: { id: number; content: string }[] };
  const idOf = (t: string) => {
    const a = tj.added_tokens.find((x) => x.content === t);
    if (a === undefined) throw new Error(`${TARGET}/tokenizer.json: no added token '${t}'`);
    return a.id;
  };
  const opts: InitModelOptions = {
    ...DRAFT_ARCH, tieWordEmbeddings: true, seed: 0, initStd: 0.02,
    bosTokenId: idOf("<|begin_of_text|>"), eosTokenIds: [idOf("<|end_of_text|>"), idOf("<|eot_id|>")],
  };
  writeInitModel(INIT, opts, TARGET);
  log(`random model -> ${INIT}`);
}

async function pretrain(): Promise<void> {
  if (!existsSync(join(INIT, "model.safetensors"))) init();
  await pretrainStage({ init: INIT, data: join(DATA, "brown", "train.jsonl"), eval: join(DATA, "brown", "heldout-small.jsonl"), run: RUN,
    steps: DRAFT_PRETRAIN_STEPS, args: DRAFT_PRETRAIN_ARGS, log });
}

function exportModel(): void {
  const final = join(RUN, "final");
  if (!existsSync(join(final, "model.safetensors"))) throw new Error(`${final}: no trained model yet (run the pretrain stage)`);
  rmSync(MODEL, { recursive: true, force: true });
  mkdirSync(MODEL, { recursive: true });
  for (const f of ["config.json", "model.safetensors", "generation_config.json"]) cpSync(existsSync(join(final, f)) ? join(final, f) : join(INIT, f), join(MODEL, f));
  // The tokenizer is floe-brown's, byte for byte: a draft must propose ids the target understands.
  for (const f of ["tokenizer.json", "tokenizer_config.json"]) cpSync(join(TARGET, f), join(MODEL, f));
  log(`exported -> ${MODEL}`);
}

function jsonlTexts(file: string): string[] {
  return readFileSync(file, "utf8").split("\n").filter((l) => l.trim()).map((l) => (JSON.parse(l) as { text: string }).text);
}

/** Held-out Brown loss through the inference path. */
async function evalModel(): Promise<void> {
  const opened = await openModel(MODEL, { threads: 1 });
  const r = heldOutLoss(opened.model, opened.tokenizer!, jsonlTexts(join(DATA, "brown", "heldout.jsonl")), { maxSeqLen: MAX_SEQ_LEN });
  log(`${MODEL}: brown held-out loss ${r.loss.toFixed(4)}, perplexity ${r.perplexity.toFixed(2)} over ${r.tokens} tokens`);
  writeFileSync(join(WORK, "eval.json"), JSON.stringify({ brown: { loss: r.loss, perplexity: r.perplexity, tokens: r.tokens } }, null, 1) + "\n");
  opened.loaded.dispose();
}

const stages: Record<string, () => Promise<void> | void> = { init, pretrain, export: exportModel, eval: evalModel };

const which = process.argv[2] ?? "all";
if (!existsSync(join(DATA, "brown", "train.jsonl"))) throw new Error(`${DATA}/brown/train.jsonl is missing: run 'node --import tsx scripts/make-default-model.ts corpora' first`);
mkdirSync(WORK, { recursive: true });
if (which === "all") {
  for (const k of ["init", "pretrain", "export", "eval"]) {
    log(`stage ${k}`);
    await stages[k]!();
  }
} else if (stages[which]) await stages[which]!();
else throw new Error(`unknown stage '${which}'; expected all or one of ${Object.keys(stages).join(", ")}`);
