// The `floe` command line: info, generate, chat, serve, finetune, eval and the tools around them.

import { KvCache } from '../model/kv-cache.js';
import { defaultKvDtype, generate, generateAsync, type GenerateResult, type TopLogprob } from '../model/generate.js';
import { openModel } from '../model/open.js';
import { loadProposerModule, speculativeModuleOf, type SpeculativeSpec } from '../model/speculation.js';
import { wordStartTable } from '../model/prediction.js';
import { tokenBytes } from '../engine/constrained/token-mask.js';
import { heldAfterLoad, LINEAR_WEIGHT, loadModel, type LoadOptions } from '../formats/load.js';
import { OFFLOAD_FLAGS, offloadOptions } from './offload-args.js';
import { accessSync, constants as fsConstants, existsSync, mkdirSync, readdirSync, readFileSync, realpathSync, renameSync, rmSync, statSync } from 'node:fs';
import { basename, dirname, join, relative as relativePath, resolve as resolvePath } from 'node:path';
import { readGguf } from '../formats/gguf.js';
import { tokenizerFromGguf } from '../formats/gguf-tokenizer.js';
import { loadTokenizer, type Tokenizer } from '../formats/tokenizer.js';
import { TextStream } from '../model/text-stream.js';
import type { BackendName } from '../backend/select.js';
import { loadAddon } from '../backend/native-addon.js';
import type { KvDType } from '../backend/backend.js';
import {
  type Range, commandHelp, conflicts, threadsFlag, DECIMAL_INT, defaultMaxTokens, kvCacheDtype, kvDtypeFlagName, loadDtype, modelOrBuiltin, num, optNum, packageVersion, parse, parseSize, samplingFlags, swapSpaceFlag, textOrStdin, UsageError,
  withGenerationDefaults,
} from './args.js';
import { joinPipeline, PIPELINE_FLAGS, pipelineFlags } from './pipeline.js';

const HELP = `floe — serve and fine-tune Llama-family models

Usage:
  floe info [MODEL] [--dtype fp8|bf16] [--json]
                                       architecture, parameters, dtypes, memory, kernels (ISA, AMX); the
                                       dtypes and memory the weights are held in (after --dtype's conversion)
  floe generate [--model PATH] (--prompt TEXT | --prompt - | --prompt-ids 1,2,3) [options]
  floe chat [--model PATH] [--system TEXT] [generate's sampling options]
                                       interactive chat on stdin (chat template, streamed answers,
                                       the conversation kept); /bye or end of input ends it
  floe serve [--model PATH] [options]  OpenAI-compatible HTTP server
  floe embed [--model PATH] --text T [--text T ...] [--json]   unit embedding vectors (default model: models/floe-embed)
  floe batch [--model PATH] --input REQUESTS.jsonl --output RESULTS.jsonl [options]
                                       run an OpenAI Batch API input file offline (resumable)
  floe guard [--model GUARD] (--text T | --messages FILE.json) [--role user|agent] [options]
                                       Llama Guard safety verdict, categories and unsafe probability
  floe rag ingest|query|ask|list|delete --db DIR [--collection NAME] ...
                                       retrieval-augmented generation over your documents (floe rag --help)
  floe tokenize [--model PATH] [--no-bos] [--json] TEXT
                                       token ids of TEXT ('-' reads stdin), comma-separated
  floe detokenize [--model PATH] [--json] IDS
                                       text of comma-separated token ids
  floe tokenizer train --data FILE... --vocab-size N [--min-frequency F] --out DIR
                                       train a byte-level BPE tokenizer (tokenizer.json)
  floe finetune [--model PATH] --data FILE.jsonl --out DIR [options]
                                       LoRA (default) or full fine-tuning; see finetune options
  floe distill --teacher DIR --student DIR --data FILE.jsonl --out DIR [options]
                                       train the student (LoRA or --full) on (1-r)·CE + r·T²·KL to the
                                       teacher's cached top-k; see distill options
  floe synth --method self-instruct|evol-instruct|magpie|from-documents --out FILE.jsonl [options]
                                       synthetic instruction data on the engine or an --endpoint; see synth options
  floe merge --model BASE --adapter DIR --out DIR [--dtype f32|bf16]
                                       fold a PEFT LoRA adapter into the base, write an HF dir
  floe quantize --model IN --out OUT --fp8 [--block 128 | --per-row] [--quantize-head] [--quantize-embed]
                                       write an FP8 (E4M3) HF checkpoint: linear layers in fp8 with f32
                                       scales (--block B: B×B blocks, weight_scale_inv, the default with
                                       B=128; --per-row: compressed-tensors channel scales), the rest bf16
  floe plan (--model CONFIG.json|DIR|FILE.gguf | --preset NAME) [options]
                                       memory per device (weights, KV, activations, LoRA state, offload) for
                                       serving or fine-tuning on a cluster, and on this machine; see plan options
  floe eval [--model PATH] --data FILE [--adapter DIR] [--dtype fp8|bf16] [--kv-cache-dtype auto|f32|bf16|fp8]
            [--max-seq-len N] [--max-tokens N] [--train-on-prompt] [--threads N] [--backend native|reference] [--json]
                                       perplexity through paged KV over finetune's data formats, scored on the
                                       tokens training scores: {"text"} (BOS text EOS), {"prompt","completion"}
                                       (the completion + EOS), {"messages"} (assistant turns, chat template);
                                       --train-on-prompt scores every token; or plain-text paragraphs

MODEL / PATH is a Hugging Face model directory or a .gguf file. Without it, info, generate, chat, serve, batch, eval,
finetune, synth, rag ask, tokenize and detokenize use the built-in model models/floe-brown of the floe package (noted on stderr).
floe --version prints the version; floe COMMAND --help prints that command's usage and options. With --json, an
error is one JSON object on stdout, {"error":{"message","type"}}, and the exit code is non-zero.

generate options:
  --prompt -              read the prompt from stdin (one trailing newline dropped)
  --max-tokens N          tokens to generate (default: generation_config.json max_new_tokens, else 128,
                          clamped to the room left in the context; an explicit N must fit)
  --temperature T         0 = greedy (default 0.8)
  --top-k K               keep the K most likely tokens (0 = off)
  --top-p P               nucleus sampling (1 = off)
  --min-p P               drop tokens below P × the best probability (0 = off)
  --repetition-penalty R  HF-style repetition penalty (1 = off)
                          the model's generation_config.json (temperature, top_k, top_p, min_p,
                          repetition_penalty, do_sample) sets the defaults of these five; flags override
  --seed S                reproducible sampling
  --stop TEXT             stop string (repeatable)
  --min-tokens N          the first N tokens never end the answer: EOS is masked and no stop string counts (vLLM's
                          min_tokens; at most --max-tokens)
  --threads N             kernel threads (default: all cores)
  --backend native|reference
  --kv-cache-dtype auto|f32|bf16|fp8   fp8: E4M3 keys/values with per-token, per-head scales
  --dtype fp8|bf16        while loading: fp8 quantizes the linear weights (per-row scales); bf16 converts every f32 /
                          f16 weight matrix (linear, embedding, head; norms and bf16/fp8/q8_0 weights stay as stored)
  --speculative ngram|suffix|PATH|module:PATH   speculative decoding: prompt n-gram lookup, suffix index, a draft
                          model (HF dir or .gguf) sharing the tokenizer, or a proposer module (its default
                          export makes a Proposer); output distribution unchanged
  --num-speculative-tokens K        most draft tokens per step (default 4; adapted per sequence below K)
  --prediction FILE       Predicted Outputs: text the answer is expected to repeat (an edited passage or code);
                          its tokens are verified as drafts, with or without --speculative; output unchanged
  --num-prediction-tokens N         most prediction tokens verified per step (default 15; adapted below N)
  --logprobs K            top-K logprobs per generated token
  --prompt-logprobs K     top-K logprobs per prompt token
  --no-bos                do not add the BOS token to --prompt
  --json                  print one JSON object instead of streaming text
  --adapter DIR           apply a PEFT LoRA adapter (adapter_config.json + adapter_model.safetensors)
  --weights-memory SIZE   keep weights within SIZE: the layers that do not fit stream from disk each step through
                          a ring of 3 staging buffers read ahead (KV cache and activations come on top)
  --offload-ratio F       or stream a share F of the layers (0..1)
  --pipeline-parallel-size N   under \`mpirun -np N\`: the layers split into N stages, one per rank
  --pipeline-stages 0-2,3-5    the stages' layer ranges (inclusive; default: balanced by FLOPs and bytes)

chat options:
  --system TEXT           a system message first in the conversation
  --max-tokens N          most tokens per answer (default: generation_config.json max_new_tokens, else all the
                          room left in the context; either way at most the room left)
  --temperature, --top-k, --top-p, --min-p, --repetition-penalty, --seed, --threads, --backend,
  --kv-cache-dtype, --dtype fp8|bf16, --adapter DIR: as for generate

finetune options (data: JSONL of {"text"}, {"prompt","completion"} or {"messages"}):
  --eval FILE | --eval-split F   validation file, or hold out a fraction F of the data
  --eval-steps N          eval loss / perplexity every N steps (and at start and end)
  --lora-rank R           adapter rank (default 8)
  --lora-alpha A          scale numerator (default 2 × R: 16 at rank 8); scale = A/R (--rslora: A/sqrt(R))
  --lora-targets LIST     subset of q,k,v,o,gate,up,down (default all)
  --lora-dropout P        dropout on the adapter input (default 0)
  --rslora                rank-stabilised scaling
  --full                  train every weight (f32 master copies) instead of an adapter
  --epochs N | --max-steps N     length of training (default 1 epoch)
  --lr LR                 peak learning rate (default 2e-4 LoRA, 1e-4 full)
  --lr-schedule cosine|linear|constant   decay after warmup (default cosine)
  --warmup-steps N        linear warmup (default 0)
  --batch-size N | --batch-tokens N      micro-batch in sequences (default 1) or packed tokens
  --grad-accum N          micro-batches per optimizer step (default 1)
  --max-seq-len N         truncate samples (default min(2048, context); contrastive: the base's embedding max tokens)
  --checkpoint-activations  keep only block inputs; recompute in backward (less memory)
  --weights-memory SIZE | --offload-ratio F   LoRA on a frozen base: stream layers from disk (as for generate)
  --dtype fp8|bf16        LoRA on a frozen base converted while loading, as for generate (fp8: linear weights,
                          per-row scales; bf16: f32 / f16 weight matrices); not with --full (f32 master copies)
  --optimizer adamw|sgd   (default adamw)
  --weight-decay W        decoupled weight decay (default 0)
  --max-grad-norm G       clip the global gradient norm (default 1; 0 = off)
  --train-on-prompt       loss on prompt / user tokens too
  --save-steps N          checkpoint every N steps (always at the end)
  --save-initial          also save the untrained starting point (step 0)
  --save-total-limit K    keep the last K checkpoints (default 3; 0 = all)
  --save-dtype f32|bf16   dtype of the --full output model (default f32)
  --no-shuffle            keep the file's order
  --resume DIR            a checkpoint, or an output dir (its newest complete checkpoint)
  --overwrite             clear a non-empty --out DIR first (without it or --resume, floe refuses it)
  --seed S                (default 0)
  --objective lm|contrastive   contrastive: data of {"query","positive"[,"negative"]}, InfoNCE with in-batch
                          negatives (default batch 32 pairs); --temperature T (default 0.05), --pooling mean|last
  --threads N, --backend native|reference, --quiet, --json (print the summary as JSON)
  Writes DIR/metrics.jsonl, DIR/checkpoint-NNNNNN/, DIR/final/ (adapter or HF model), DIR/summary.json.
  --pipeline-parallel-size N, --pipeline-stages LIST   LoRA under \`mpirun -np N\`: one stage per rank (1F1B);
                          checkpoints in DIR/stage-K/, rank 0 writes the rest
  --micro-batches M       micro-batches per step in a pipeline run (= --grad-accum; default N)

embed options:
  --model PATH            an embedding model (embedding_config.json: pooling, max_tokens), HF dir or .gguf
                          (default: the package's models/floe-embed)
  --text T                a text to embed ('-' reads stdin); repeat for several, one vector per line out
  --pooling mean|last     override the model's pooling
  --threads N, --backend native|reference
  --json                  {model, dimensions, pooling, data: [{index, tokens, truncated, embedding}]}

batch options:
  --input FILE.jsonl      OpenAI batch input: one {custom_id, method: "POST", url, body} per line, one url
  --output FILE.jsonl     every line's result in input order: {id, custom_id, response: {status_code,
                          request_id, body}, error}, the Batch API's output-file line
  --state DIR             resume state (SQLite; default OUTPUT.floe-batch): re-running the same command
                          continues without redoing finished lines
  --batch-max-num-seqs N  lines decoding at once (default 4 × --max-num-seqs: wider steps, more tokens/s)
  --max-num-seqs N, --max-batched-tokens N, --kv-cache-memory SIZE, --kv-cache-dtype auto|f32|bf16|fp8,
  --dtype fp8|bf16, --threads N, --backend native|reference
  --quiet                 no progress on stderr (a bar on a terminal, a line per 10 % otherwise)

distill options (and every finetune option above; --student takes --model's place):
  --kd-ratio R            weight r of the distillation part (default 0.5; 0 = CE only)
  --temperature T         distillation temperature; the KD part is scaled by T² (default 2)
  --top-k K               teacher tokens cached per target; the rest is one bucket (default 64)
  --loss forward-kl|reverse-kl|jsd   KL(teacher‖student), KL(student‖teacher), or generalised JSD
  --beta B                jsd only: 0 = forward-kl, 1 = reverse-kl (default 0.5)
  --teacher-cache FILE    the teacher pass's output (default OUT.teacher-cache), reused when it matches
  --cache-dtype f16|f32   log-probabilities in the cache (default f16: 6K+4 bytes per target token)
  --on-policy L           GKD: with probability L per micro-batch the student samples the continuations and the
                          teacher (in memory) scores them (default 0: cached teacher only; 1 needs no cache)
  --sample-temperature S  the student's sampling temperature on-policy (default 1; 0 = greedy)
  --max-new-tokens N      on-policy continuation length (default: each sample's completion length)
  Teacher and student must share tokenizer.json and the vocab size. Writes what finetune writes; metrics.jsonl
  train lines carry ce and kd (and on_policy per micro-batch with --on-policy).

synth options (see README "Synthetic data"):
  --model PATH | --endpoint URL [--api-key K] [--endpoint-model NAME]   in-process engine, or an OpenAI-compatible
                          server (--model then only gives the chat template for magpie and the tokenizer for chunking)
  --max-retries N         --endpoint: retries of a request refused with 429 / 5xx or a network error, waiting
                          0.25 s, then twice as long each time (default 5, at most 20)
  --num N                 work units (default 100; from-documents: all passages unless given)
  --seeds FILE.jsonl      seed tasks {"instruction"[,"input"]} (self-instruct, evol-instruct; default data/synth/seeds.jsonl)
  --rounds N              evol-instruct rounds (default 3)
  --docs FILE...          from-documents texts, cut by the RAG chunker: --chunk-tokens N (default 256), --chunk-overlap N
                          (default 0), --questions-per-passage N (default 1)
  --min-support F|off     from-documents: drop answers whose content words are < F found in the passage (default 0.5)
  --min-ll-gain G         from-documents: drop answers the passage makes < G nats/token more likely (with --endpoint:
                          echoed /completions logprobs, and --model DIR for the template; negative: --min-ll-gain=-0.5)
  --prompts DIR           prompt files DIR/<method>/<name>.txt over the shipped data/synth
  --format messages|prompt-completion   output lines (default messages); each carries "provenance"
  --dedup-threshold J     drop samples whose user turn has MinHash Jaccard >= J with a kept one (default 0.7)
  --judge [--min-score S] the model scores each sample 1-5 (data/synth/judge/rubric.txt); drop below S
  --guard-model PATH      drop samples this safety model calls unsafe (counted per category)
  --min-chars N, --max-chars N, --max-tokens N, --temperature T, --top-p P, --seed S, --concurrency N (units in flight)
  --threads N, --backend, --kv-cache-memory SIZE, --kv-cache-dtype, --max-num-seqs N, --quiet, --json (summary)
  Re-running the same command with the same --out resumes it (OUT.synth-progress records what is done).

guard options:
  --model GUARD           Llama Guard checkpoint, HF dir or .gguf (default: the package's models/floe-guard)
  --text T | --messages FILE.json   one user message ('-' reads stdin), or a JSON list of {role, content}
  --role user|agent       judge the last user message (default) or the last assistant answer
  --categories FILE.json  custom policy: [{code?, name, description?}] or {"S1": "name", ...}
  --exclude S6,S7         leave these categories out of the policy
  --guard-format llama-guard-3|llama-guard-3-1b|llama-guard-2   (default: the checkpoint's template, else 3)
  --threshold P           flagged when P(unsafe) >= P (default 0.5)
  --print-prompt          print the exact prompt (with --json: a "prompt" field)
  --json                  one JSON object: flagged, verdict, categories, unsafe_probability, usage, ...
  --threads N, --backend native|reference, --kv-cache-memory SIZE

plan options (presets: llama-3.1-405b, llama-3.1-70b, llama-3.1-8b, llama-3.2-1b):
  --dtype f32|bf16|f16|fp8|q8_0   linear weights (fp8: embedding and head as stored; bf16: fp8 / q8_0 as stored); default: as stored (presets bf16);
                          a GGUF or safetensors is counted tensor by tensor, as stored or as --dtype fp8 / bf16 converts it
  --kv-dtype f32|bf16|fp8 --context N --concurrency C --max-batched-tokens N   serving (defaults f32 for f32 weights
                          else bf16, max, 1, 512)
  --swap-space SIZE       host memory per device for preempted requests' KV, as serve takes it (default: the KV
                          cache's size, at most 4GiB; none with --pipeline-parallel); counted in the total
  --devices N --device-memory SIZE --nodes N   cluster (defaults 1, 80GB, 1)
  --pipeline-parallel P --tensor-parallel T    layout; the rest of --devices is data-parallel
  --offload-ratio F       share of layer weights streamed from host / disk (default 0; 3 layers of staging stay resident)
  --lora-rank R [--lora-targets LIST] | --full  plan a fine-tuning step instead of serving (targets default: all seven)
  --micro-batch B --seq-len S --checkpoint-activations --zero 0|1|2|3   (defaults 1, min(2048, context), off, 0; ZeRO over the
                          data-parallel replicas)
  --json

serve options:
  --host HOST             listen address (default 127.0.0.1)
  --port N                port (default 8000; 0 = any free port)
  --api-key KEY           require "Authorization: Bearer KEY" on /v1 routes, /tokenize, /detokenize, /score and /rerank
  --allowed-origins LIST  CORS: browser apps on these origins (comma-separated scheme://host[:port], or *) may call
                          the API; preflights are answered before the key check (default: none)
  --model-name NAME       model id clients send (default: the model path's base name, without .gguf)
  --threads N             kernel threads (default: all cores)
  --backend native|reference
  --kv-cache-memory SIZE  KV cache budget, e.g. 2GiB or 512MiB (default: a share of free RAM)
  --kv-cache-dtype auto|f32|bf16|fp8
  --swap-space SIZE       host memory for preempted requests' KV, copied out and back bit for bit instead of
                          recomputed (default: the KV cache's size, at most 4GiB; 0 = always recompute)
  --kv-prefault           commit the KV cache's memory in the background at start (as llama.cpp does), so that no
                          decode step waits on a first-touch page fault
  --dtype fp8|bf16        while loading: fp8 quantizes the linear weights (per-row scales); bf16 converts every f32 /
                          f16 weight matrix (linear, embedding, head; norms and bf16/fp8/q8_0 weights stay as stored)
  --block-size N          tokens per KV block (default 16)
  --speculative ngram|suffix|PATH|module:PATH   speculative decoding for every request (opt out per request)
  --num-speculative-tokens K        most draft tokens per sequence and step (default 4)
  --num-prediction-tokens N         most tokens of a request's prediction (Predicted Outputs) verified per sequence
                          and step (default 15)
  --max-batched-tokens N  token budget per engine step (default 512; 4096 with --task embed)
  --max-num-seqs N        most sequences in one engine step (default 64; each of n choices is one; the n of a request join
                          together, so the running set can briefly hold a few more than a step takes)
  --batch-max-num-seqs N  the Batch API lane's width while no interactive request runs (default 4 × --max-num-seqs)
  --max-queue N           requests waiting beyond the free --max-num-seqs slots; more get 429 (default 1024)
  --max-body BYTES        largest request body (default 8MiB); larger gets 413
  --shutdown-grace S      on SIGTERM/SIGINT, seconds running requests may finish (default 30)
  --no-ui                 do not serve the web console at / (the API is unchanged)
  --data-dir DIR          Files / Batch / fine-tuning state (SQLite + files; default ./floe-data, created on first use)
  --no-batch              no /v1/files, /v1/batches and /v1/fine_tuning routes
  --jobs-threads N        threads of the fine-tuning jobs' trainer process, run niced (default 1)
  --lora-modules NAME=DIR [NAME=DIR ...]  serve PEFT LoRA adapters by name (the request's "model" picks one)
  --max-loras N           distinct adapters in one engine step (default 4); requests for more wait
  --max-lora-rank R       refuse adapters of a higher rank (default 64)
  --max-cpu-loras N       adapters kept in host memory; the least recently used are dropped and read again
                          from their directory when asked for (default: no limit; at least --max-loras)
  --enable-lora-loading   answer POST /v1/load_lora_adapter and /v1/unload_lora_adapter (needs --lora-root)
  --lora-root DIR         runtime-loaded adapter paths must resolve inside DIR
  --guard-model PATH      a Llama Guard checkpoint on its own engine: "guardrails" on chat and completions, POST /v1/moderations
  --guardrails            judge every chat and completion answer with the guard (output rail), not only requests that ask
  --guard-window N        streamed answers are held back and judged every N tokens (default 64)
  --guard-kv-cache-memory SIZE  the guard's KV budget (default: a quarter of --kv-cache-memory, else 256MiB)
  --weights-memory SIZE | --offload-ratio F   stream layers from disk (as for generate)
  --embedding-model PATH  also serve this embedding model (e.g. models/floe-embed) on /v1/embeddings, by its base name
  --task generate|embed   embed: --model is an embedding model; only /v1/embeddings answers (default generate)
  --rag-db DIR            RAG collections (/v1/rag/*, chat's "rag" field) in DIR, embedded by the embedding
                          model (--embedding-model, default the built-in models/floe-embed; or --task embed's)
  --pipeline-parallel-size N, --pipeline-stages LIST   as for generate; rank 0 serves HTTP, the others are stages
`;

export async function run(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  if (cmd !== undefined && cmd !== 'rag' && !cmd.startsWith('-') && (rest.includes('--help') || rest.includes('-h'))) {
    const h = commandHelp(HELP, cmd === 'tokenizer' ? 'tokenizer train' : cmd);
    if (h) { process.stdout.write(h); return 0; }
  }
  try {
    switch (cmd) {
      case '--version': case '-v': case 'version':
        process.stdout.write(`floe ${packageVersion()}\n`);
        return 0;
      case 'info': return await info(rest);
      case 'generate': return await generateCmd(rest);
      case 'chat': return await (await import('./chat.js')).chatCmd(rest);
      case 'guard': return await (await import('./guard.js')).guardCmd(rest);
      case 'tokenize': return await tokenizeCmd(rest);
      case 'detokenize': return await detokenizeCmd(rest);
      case 'serve': return await serveCmd(rest);
      case 'batch': return await (await import('./batch.js')).batchCmd(rest);
      case 'rag': return await (await import('./rag.js')).ragCmd(rest);
      case 'tokenizer': return await tokenizerCmd(rest);
      case 'finetune': return await finetuneCmd(rest);
      case 'distill': return await (await import('./distill.js')).distillCmd(rest);
      case 'synth': return await (await import('./synth.js')).synthCmd(rest);
      case 'embed': return await (await import('./embed.js')).embedCmd(rest);
      case 'merge': return await mergeCmd(rest);
      case 'quantize': return await quantizeCmd(rest);
      case 'eval': return await evalCmd(rest);
      case 'plan': return await (await import('./plan.js')).planCmd(rest);
      case undefined: case 'help': case '--help': case '-h':
        process.stdout.write(HELP);
        return cmd === undefined ? 1 : 0;
      default:
        process.stderr.write(`floe: unknown command '${cmd}'\n\n${HELP}`);
        return 2;
    }
  } catch (e) {
    const usage = e instanceof UsageError || String((e as { code?: unknown }).code ?? '').startsWith('ERR_PARSE_ARGS');
    const message = (e as Error).message;
    if (rest.includes('--json')) {
      process.stdout.write(JSON.stringify({ error: { message, type: usage ? 'usage_error' : 'error' } }) + '\n');
    } else {
      process.stderr.write(`floe ${cmd}: ${message}\n`);
    }
    if (process.env.FLOE_DEBUG) console.error(e);
    return usage ? 2 : 1;
  }
}

async function info(args: string[]): Promise<number> {
  const { values, positionals } = parse(args, { json: { type: 'boolean' }, model: { type: 'string' }, dtype: { type: 'string' } }, true);
  if (values.model !== undefined && positionals.length > 0) throw new UsageError('give the model once: floe info MODEL or floe info --model MODEL');
  if (positionals.length > 1) throw new UsageError(`usage: floe info [MODEL] (got ${positionals.length} paths)`);
  const load = loadDtype(values.dtype);
  const path = modelOrBuiltin(values.model ?? positionals[0], 'info');
  const m = await loadModel(path);
  const c = m.config;
  const dtypes: Record<string, number> = {};
  let params = 0;
  let bytes = 0;
  // what generate / serve with this --dtype would hold, per weight kind, predicted from dtypes and shapes (heldAfterLoad)
  const kinds: Record<WeightKind, Map<string, number>> = { linear: new Map(), embedding: new Map(), head: new Map(), norms: new Map(), other: new Map() };
  let heldBytes = 0;
  for (const [name, t] of m.tensors) {
    params += t.numel;
    bytes += t.data.byteLength + (t.scale?.byteLength ?? 0);
    dtypes[t.dtype] = (dtypes[t.dtype] ?? 0) + t.numel;
    const h = heldAfterLoad(name, t, load?.dtype);
    heldBytes += h.bytes;
    const k = kinds[weightKind(name)];
    k.set(h.dtype, (k.get(h.dtype) ?? 0) + t.numel);
  }
  if (c.tieWordEmbeddings) for (const [d, n] of kinds.embedding) kinds.head.set(d, n);
  // names a kind's dtypes, the most parameters first ('q4_k + q6_k' where a kind mixes them)
  const kindDtypes = (k: WeightKind): string | null => [...kinds[k]].sort((a, b) => b[1] - a[1]).map(([d]) => d).join(' + ') || null;
  const weights = {
    converted: load?.dtype ?? null, linear: kindDtypes('linear'), embedding: kindDtypes('embedding'), head: kindDtypes('head'), norms: kindDtypes('norms'),
    ...(kinds.other.size ? { other: kindDtypes('other') } : {}), bytes: heldBytes,
  };
  // the engine's default KV dtype (defaultKvDtype): f32 when the first layer's q projection is held in f32
  const q0 = m.tensors.get('model.layers.0.self_attn.q_proj.weight');
  const kvDtype: KvDType = q0 && heldAfterLoad('model.layers.0.self_attn.q_proj.weight', q0, load?.dtype).dtype === 'f32' ? 'f32' : 'bf16';
  const kvPerToken = KvCache.bytesPerToken(c.numLayers, c.numKvHeads, c.headDim, kvDtype);
  const addon = loadAddon();
  const kernels = addon
    ? { backend: 'native', isa: addon.isa(), supported_isa: addon.supportedIsa(), threads: addon.getThreads(), amx: addon.amx() }
    : { backend: 'reference', reason: 'the native addon is not built (npm install builds it)' };
  const out = {
    path: m.path, format: m.format, architecture: 'llama',
    parameters: params, weight_bytes: bytes, dtypes, weights,
    config: c,
    kv_cache: { dtype: kvDtype, bytes_per_token: kvPerToken, bytes_at_max_context: kvPerToken * c.maxPositionEmbeddings },
    kernels,
  };
  m.dispose();
  if (values.json) { process.stdout.write(JSON.stringify(out) + '\n'); return 0; }
  const mib = (b: number) => `${(b / 2 ** 20).toFixed(1)} MiB`;
  const held = (['linear', 'embedding', 'head', 'norms', 'other'] as const).filter((k) => weights[k])
    .map((k) => `${k} ${weights[k]}${k === 'head' && c.tieWordEmbeddings ? ' (tied)' : ''}`).join(', ');
  const lines = [
    `model        ${m.path} (${m.format})`,
    `architecture llama: ${c.numLayers} layers, hidden ${c.hiddenSize}, ffn ${c.intermediateSize}, heads ${c.numHeads} (kv ${c.numKvHeads}), head dim ${c.headDim}`,
    `vocab        ${c.vocabSize}${c.tieWordEmbeddings ? ' (tied embeddings)' : ''}`,
    `rope         theta ${c.ropeTheta}${c.ropeScaling ? `, ${c.ropeScaling.type} scaling ×${c.ropeScaling.factor}` : ''}${m.ropeFreqFactors ? ', rope_freqs factors' : ''}`,
    `context      ${c.maxPositionEmbeddings} tokens`,
    `parameters   ${params.toLocaleString('en-US')} (${(params / 1e9).toFixed(3)} B)`,
    `dtypes       ${Object.entries(dtypes).map(([d, n]) => `${d} ${(100 * n / params).toFixed(1)}%`).join(', ')}${load ? ' (as stored)' : ''}`,
    `weights      ${load ? `${mib(heldBytes)} with --dtype ${load.dtype} (${mib(bytes)} as stored)` : mib(bytes)}`,
    `held         ${held}${load ? ` (--dtype ${load.dtype})` : ''}`,
    `kv cache     ${kvDtype}: ${(kvPerToken / 1024).toFixed(1)} KiB per token, ${mib(kvPerToken * c.maxPositionEmbeddings)} at full context`,
    `kernels      ${kernelsLine(addon)}`,
  ];
  process.stdout.write(lines.join('\n') + '\n');
  return 0;
}

type WeightKind = 'linear' | 'embedding' | 'head' | 'norms' | 'other';
/** Which kind of weight a checkpoint tensor is, by its HF name (floe info's `held` line). */
function weightKind(name: string): WeightKind {
  if (LINEAR_WEIGHT.test(name)) return 'linear';
  if (name === 'model.embed_tokens.weight') return 'embedding';
  if (name === 'lm_head.weight') return 'head';
  return /norm\.weight$/.test(name) ? 'norms' : 'other';
}

/** This host's kernels, as `floe info` prints them: the native ISA and threads, and what the AMX tiles run. */
function kernelsLine(addon: ReturnType<typeof loadAddon>): string {
  if (!addon) return 'reference (TypeScript): the native addon is not built (npm install builds it)';
  const a = addon.amx();
  const amx = a.active
    ? `AMX ${a.mode === 'emulate' ? 'emulated' : 'tiles'}: bf16 / fp8 GEMMs${a.int8 || a.mode === 'emulate' ? ', int8 for Q8_0 decode batches' : ''}${a.attn ? ', prefill attention' : ''}`
    : a.supported ? `AMX off (${a.mode === 'off' ? 'FLOE_AMX=0 or setAmx' : 'not on the AVX-512 kernels'})` : `no AMX: ${a.reason}`;
  return `native ${addon.isa()}${addon.isa() !== addon.supportedIsa() ? ` (host supports ${addon.supportedIsa()})` : ''}, ${addon.getThreads()} threads; ${amx}`;
}

async function generateCmd(args: string[]): Promise<number> {
  const { values } = parse(args, {
    model: { type: 'string' }, prompt: { type: 'string' }, 'prompt-ids': { type: 'string' },
    'max-tokens': { type: 'string' }, temperature: { type: 'string' }, 'top-k': { type: 'string' },
    'top-p': { type: 'string' }, 'min-p': { type: 'string' }, 'repetition-penalty': { type: 'string' },
    seed: { type: 'string' }, stop: { type: 'string', multiple: true }, threads: { type: 'string' }, 'min-tokens': { type: 'string' },
    backend: { type: 'string' }, 'kv-cache-dtype': { type: 'string' }, logprobs: { type: 'string' },
    'prompt-logprobs': { type: 'string' }, 'no-bos': { type: 'boolean' }, json: { type: 'boolean' },
    adapter: { type: 'string' }, dtype: { type: 'string' },
    speculative: { type: 'string' }, 'num-speculative-tokens': { type: 'string' }, prediction: { type: 'string' }, 'num-prediction-tokens': { type: 'string' },
    ...OFFLOAD_FLAGS, ...PIPELINE_FLAGS,
  });
  const offload = offloadOptions(values);
  let predictionText: string | undefined;
  if (values.prediction !== undefined) {
    try { predictionText = readFileSync(values.prediction, 'utf8'); } catch (e) { throw new UsageError(`--prediction ${values.prediction}: ${(e as Error).message}`); }
  }
  if ((values.prompt === undefined) === (values['prompt-ids'] === undefined)) throw new UsageError('give exactly one of --prompt TEXT or --prompt-ids 1,2,3');
  conflicts(values, [['prompt-ids', 'no-bos']]);
  const emptyStop = values.stop?.indexOf('') ?? -1;
  if (emptyStop >= 0) throw new UsageError(`--stop expects a non-empty stop string, got '' (--stop number ${emptyStop + 1})`);
  const sampling = samplingFlags(values);
  const maxTokensFlag = optNum(values['max-tokens'], 'max-tokens', true, { min: 1 });
  const minTokens = optNum(values['min-tokens'], 'min-tokens', true);
  if (minTokens !== undefined && maxTokensFlag !== undefined && minTokens > maxTokensFlag) throw new UsageError(`--min-tokens ${minTokens} is above --max-tokens ${maxTokensFlag}`);
  const logprobs = optNum(values.logprobs, 'logprobs', true);
  const promptLogprobs = optNum(values['prompt-logprobs'], 'prompt-logprobs', true);
  const modelPath = modelOrBuiltin(values.model, 'generate');
  const load = loadDtype(values.dtype);
  const backend = values.backend as BackendName | undefined;
  if (backend !== undefined && backend !== 'native' && backend !== 'reference') throw new UsageError(`--backend expects native or reference, got '${backend}'`);
  const kvDtype = kvCacheDtype(values['kv-cache-dtype']);
  const threads = threadsFlag(values.threads);
  const prompt = values.prompt === undefined ? undefined : textOrStdin(values.prompt);

  const pp = pipelineFlags(values);
  if (pp && offload) throw new UsageError('--pipeline-parallel-size and --weights-memory / --offload-ratio do not combine yet');
  if (pp && values.adapter !== undefined) throw new UsageError('--adapter is not supported with --pipeline-parallel-size yet');
  const job = pp ? await joinPipeline(modelPath, pp, { backend, threads, load }) : null;
  // from here a throw on rank 0 exits it non-zero without MPI_Finalize, and mpirun then ends the stages
  if (job?.role === 'stage') return job.exitCode;
  // --prompt-ids needs no tokenizer: one floe cannot build is a warning, and the output is ids only
  const opened = job ? job.opened : await openModel(modelPath, { backend, threads, load, offload, tokenizerOptional: values['prompt-ids'] !== undefined });
  if (opened.tokenizerError !== null && values['prompt-ids'] === undefined) throw new Error(opened.tokenizerError);
  const { tokenizer } = opened;
  // none at all (no tokenizer.json / tokenizer.ggml.*) warns as one that fails to build: else the output is silently empty
  const noTokenizer = opened.tokenizerError ?? (tokenizer === null && values['prompt-ids'] !== undefined ? `${modelPath} has no tokenizer` : null);
  if (noTokenizer !== null) process.stderr.write(`[floe] warning: ${noTokenizer}; generating without a tokenizer (no text: --json shows the ids)\n`);
  // a plan that streams no layer opens the model resident, and an adapter then applies as without the flags
  if (opened.model.layerStream && values.adapter !== undefined) throw new UsageError('--adapter with streamed layers is not supported yet: serve the adapter with floe serve --lora-modules instead');
  const model = values.adapter === undefined ? opened.model : (await import('../model/adapter.js')).applyAdapter(opened.model, values.adapter);
  let promptIds: number[];
  if (values['prompt-ids'] !== undefined) {
    promptIds = values['prompt-ids'].split(',').map((s, i) => {
      const n = Number(s.trim());
      if (!DECIMAL_INT.test(s.trim()) || !Number.isSafeInteger(n) || n < 0) throw new UsageError(`--prompt-ids: entry ${i} '${s}' is not an integer >= 0`);
      return n;
    });
  } else {
    if (!tokenizer) throw new Error(`${modelPath} has no tokenizer: use --prompt-ids`);
    promptIds = tokenizer.encode(prompt!, { addSpecialTokens: !values['no-bos'] });
  }
  const eos = tokenizer?.eosIds.length ? [...new Set([...model.config.eosTokenIds, ...tokenizer.eosIds])] : model.config.eosTokenIds;
  // the prompt's last ids give the decoder context, as the server's engine does (a SentencePiece first token keeps its space)
  const text = tokenizer ? new TextStream(tokenizer, values.stop ?? [], { promptIds }) : undefined;
  if (!tokenizer && values.stop?.length) throw new UsageError('--stop needs a tokenizer, and this model has none');
  const json = !!values.json;
  const specArg = specSource(values.speculative);
  let speculative: SpeculativeSpec | undefined;
  const specModule = speculativeModuleOf(specArg);
  if (specModule) speculative = await loadProposerModule(specModule, model);
  else if (specArg === 'ngram' || specArg === 'suffix') speculative = specArg;
  else if (specArg !== undefined) {
    try { speculative = (await openModel(specArg, { backend, threads, load })).model; } catch (e) { throw new Error(`--speculative ${specArg}: ${(e as Error).message}`); }
  }
  const numSpeculativeTokens = draftTokens(values['num-speculative-tokens'], 'num-speculative-tokens');
  const numPredictionTokens = draftTokens(values['num-prediction-tokens'], 'num-prediction-tokens');
  if (predictionText !== undefined && !tokenizer) throw new UsageError('--prediction needs a tokenizer to read its text, and this model has none');
  const prediction = predictionText === undefined ? undefined : tokenizer!.encode(predictionText, { addSpecialTokens: false });
  // known only now: the model's vocabulary bounds the top-K lists
  for (const [flag, k] of [['logprobs', logprobs], ['prompt-logprobs', promptLogprobs]] as const) {
    if (k !== undefined && k > model.config.vocabSize) throw new UsageError(`--${flag} expects an integer from 0 to the vocabulary size ${model.config.vocabSize}, got '${k}'`);
  }
  const context = model.config.maxPositionEmbeddings;
  if (maxTokensFlag !== undefined && promptIds.length + maxTokensFlag > context) {
    throw new Error(`--max-tokens ${maxTokensFlag}: prompt (${promptIds.length} tokens) + ${maxTokensFlag} = ${promptIds.length + maxTokensFlag} exceeds the model's context of ${context}; ` +
      `give --max-tokens ${Math.max(context - promptIds.length, 0)} or less`);
  }
  const maxTokens = maxTokensFlag ?? defaultMaxTokens(opened.generation.maxNewTokens ?? 128, promptIds.length, model.config.maxPositionEmbeddings);
  if (minTokens !== undefined && minTokens > maxTokens) throw new UsageError(`--min-tokens ${minTokens} is above the ${maxTokens} tokens this answer may have (--max-tokens, or the default); give --max-tokens ${minTokens} or more`);
  const genOpts = {
    speculative, numSpeculativeTokens, prediction, numPredictionTokens,
    predictionWordStarts: prediction ? wordStartTable(tokenBytes(tokenizer!)) : undefined,
    maxTokens, minTokens,
    sampling: withGenerationDefaults(sampling, opened.generation),
    stopTokenIds: eos,
    logprobs,
    promptLogprobs,
    kvDtype: kvDtype ?? defaultKvDtype(model),
    text,
    onToken: json ? undefined : (_id: number, t: string) => { if (t) process.stdout.write(t); },
  };
  const res: GenerateResult = job
    ? await generateAsync(model, promptIds, genOpts, ({ inp, kv }) => job.driver.forward(inp, kv))
    : generate(model, promptIds, genOpts);
  if (job) { await job.driver.close(); await job.transport.close(); }
  if (json) {
    const lp = (e: TopLogprob | null) => e && { token: e.token, logprob: e.logprob, top: e.top };
    process.stdout.write(JSON.stringify({
      prompt_ids: res.promptIds,
      output_ids: res.outputIds,
      text: res.text,
      finish_reason: res.finishReason,
      prompt_logprobs: res.promptLogprobs?.map(lp) ?? null,
      logprobs: res.logprobs?.map(lp) ?? null,
      timings: {
        load_ms: opened.loadMs, prompt_tokens: res.timings.promptTokens, prompt_ms: res.timings.promptMs,
        generated_tokens: res.timings.generatedTokens, decode_ms: res.timings.decodeMs,
        ...(res.timings.speculative ? { speculative: res.timings.speculative } : {}),
        ...(res.timings.prediction ? { prediction: res.timings.prediction } : {}),
      },
    }) + '\n');
  } else {
    process.stdout.write('\n');
    const t = res.timings;
    process.stderr.write(`[floe] prompt ${t.promptTokens} tok ${(t.promptTokens / (t.promptMs / 1000)).toFixed(1)} tok/s, ` +
      `generated ${t.generatedTokens} tok ${(t.generatedTokens / (t.decodeMs / 1000)).toFixed(1)} tok/s (${model.backend.name}` +
      `${job ? `, ${pp!.size} pipeline stages ${job.stages}` : ''})\n`);
  }
  opened.loaded.dispose();
  return 0;
}

/** The tokenizer of an HF dir or a .gguf file, without loading the weights. */
async function openTokenizer(path: string): Promise<Tokenizer> {
  let tok: Tokenizer | null;
  if (statSync(path, { throwIfNoEntry: false })?.isDirectory()) tok = await loadTokenizer(path);
  else if (/\.gguf$/i.test(path)) tok = tokenizerFromGguf((await readGguf(path)).metadata);
  else throw new Error(`${path}: not an HF model directory or a .gguf file`);
  if (!tok) throw new Error(`${path} has no tokenizer (tokenizer.json or tokenizer.ggml.* metadata)`);
  return tok;
}

async function tokenizeCmd(args: string[]): Promise<number> {
  const { values, positionals } = parse(args, { model: { type: 'string' }, 'no-bos': { type: 'boolean' }, json: { type: 'boolean' } }, true);
  if (positionals.length !== 1) throw new UsageError(`usage: floe tokenize [--model PATH] [--no-bos] [--json] TEXT (one TEXT, or - for stdin; got ${positionals.length})`);
  const tok = await openTokenizer(modelOrBuiltin(values.model, 'tokenize'));
  const ids = tok.encode(textOrStdin(positionals[0]!), { addSpecialTokens: !values['no-bos'] });
  process.stdout.write(values.json ? JSON.stringify({ ids, tokens: ids.map((id) => tok.idToToken(id) ?? null) }) + '\n' : ids.join(',') + '\n');
  return 0;
}

async function detokenizeCmd(args: string[]): Promise<number> {
  const { values, positionals } = parse(args, { model: { type: 'string' }, json: { type: 'boolean' } }, true);
  if (positionals.length !== 1) throw new UsageError(`usage: floe detokenize [--model PATH] [--json] IDS (comma-separated, or - for stdin; got ${positionals.length} arguments)`);
  const ids = textOrStdin(positionals[0]!).split(',').map((s, i) => {
    const n = Number(s.trim());
    if (!DECIMAL_INT.test(s.trim()) || !Number.isSafeInteger(n) || n < 0) throw new UsageError(`IDS: entry ${i} '${s}' is not a token id (an integer >= 0)`);
    return n;
  });
  const tok = await openTokenizer(modelOrBuiltin(values.model, 'detokenize'));
  const text = tok.decode(ids);
  process.stdout.write(values.json ? JSON.stringify({ text }) + '\n' : text + '\n');
  return 0;
}

async function tokenizerCmd(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  if (sub !== 'train') throw new UsageError(sub === undefined ? 'give a subcommand: floe tokenizer train --data FILE... --vocab-size N --out DIR' : `unknown tokenizer command '${sub}'; expected train`);
  const { values, positionals } = parse(rest, {
    data: { type: 'string', multiple: true }, 'vocab-size': { type: 'string' }, 'min-frequency': { type: 'string' },
    out: { type: 'string' }, quiet: { type: 'boolean' },
  }, true);
  // `--data a.jsonl b.txt`: files after --data arrive as positionals.
  const files = [...(values.data ?? []), ...positionals];
  if (files.length === 0) throw new UsageError('--data FILE... is required (.jsonl with "text" fields, or plain text)');
  if (!values.out) throw new UsageError('--out DIR is required');
  outDirFlag(values.out, 'the tokenizer files');
  // a model's directory: its tokenizer.json would be replaced by a vocabulary its weights were never trained with
  if (existsSync(join(values.out, 'config.json'))) {
    throw new UsageError(`--out ${values.out} holds a model (config.json): the new tokenizer would replace the one its weights were trained with; give another directory`);
  }
  if (values['vocab-size'] === undefined) throw new UsageError('--vocab-size N is required');
  const { DEFAULT_SPECIAL_TOKENS, MAX_VOCAB_SIZE } = await import('../train/bpe-trainer.js');
  // the vocabulary holds the 256 bytes and the special tokens before any merge
  const vocabSize = num(values['vocab-size'], 'vocab-size', 0, true, { min: 256 + DEFAULT_SPECIAL_TOKENS.length, max: MAX_VOCAB_SIZE });
  const minFrequency = num(values['min-frequency'], 'min-frequency', 2, true, { min: 1 });
  const { trainTokenizerFiles } = await import('../train/bpe-trainer.js');
  const t0 = performance.now();
  const log = values.quiet ? () => {} : (m: string) => process.stderr.write(m);
  const r = await trainTokenizerFiles(files, values.out, {
    vocabSize, minFrequency,
    onProgress: process.stderr.isTTY ? (done, target) => log(`\r[floe] merges ${done}/${target}`) : undefined,
  });
  log(`${process.stderr.isTTY ? '\r' : ''}[floe] ${r.numTexts} texts, ${r.numPreTokens} pre-tokens (${r.numDistinctPreTokens} distinct), ` +
    `${r.model.merges.length} merges, vocab ${r.model.tokens.length + r.model.specialTokens.length} ` +
    `in ${((performance.now() - t0) / 1000).toFixed(1)} s -> ${values.out}/tokenizer.json\n`);
  return 0;
}

/** vLLM spells `--lora-modules a=X b=Y`: every NAME=DIR after the flag up to the next option is one module. */
function spreadLoraModules(args: readonly string[]): string[] {
  const out: string[] = [];
  let inModules = false;
  for (const a of args) {
    if (a.startsWith('-')) inModules = a === '--lora-modules';
    else if (inModules && out[out.length - 1] !== '--lora-modules') out.push('--lora-modules');
    out.push(a);
  }
  return out;
}

async function serveCmd(args: string[]): Promise<number> {
  const { values } = parse(spreadLoraModules(args), {
    model: { type: 'string' }, host: { type: 'string' }, port: { type: 'string' }, 'api-key': { type: 'string' },
    'model-name': { type: 'string' }, threads: { type: 'string' }, backend: { type: 'string' },
    'kv-cache-memory': { type: 'string' }, 'kv-cache-dtype': { type: 'string' }, 'block-size': { type: 'string' }, 'kv-prefault': { type: 'boolean' },
    'swap-space': { type: 'string' }, 'max-batched-tokens': { type: 'string' }, 'max-num-seqs': { type: 'string' }, 'batch-max-num-seqs': { type: 'string' }, 'max-queue': { type: 'string' },
    'max-body': { type: 'string' }, 'shutdown-grace': { type: 'string' }, dtype: { type: 'string' },
    'no-ui': { type: 'boolean' }, 'data-dir': { type: 'string' }, 'no-batch': { type: 'boolean' },
    speculative: { type: 'string' }, 'num-speculative-tokens': { type: 'string' }, 'num-prediction-tokens': { type: 'string' },
    'lora-modules': { type: 'string', multiple: true }, 'max-loras': { type: 'string' }, 'max-lora-rank': { type: 'string' },
    'enable-lora-loading': { type: 'boolean' }, 'lora-root': { type: 'string' }, ...OFFLOAD_FLAGS, ...PIPELINE_FLAGS,
    'jobs-threads': { type: 'string' }, 'max-cpu-loras': { type: 'string' },
    'guard-model': { type: 'string' }, guardrails: { type: 'boolean' }, 'guard-window': { type: 'string' }, 'guard-kv-cache-memory': { type: 'string' },
    'embedding-model': { type: 'string' }, task: { type: 'string' }, 'rag-db': { type: 'string' }, 'allowed-origins': { type: 'string' },
  });
  const offload = offloadOptions(values);
  const task = values.task as 'generate' | 'embed' | undefined;
  if (task !== undefined && task !== 'generate' && task !== 'embed') throw new UsageError(`--task expects generate or embed, got '${task}'`);
  if (task === 'embed' && values['embedding-model'] !== undefined) throw new UsageError('--task embed serves --model as the embedding model; --embedding-model adds one beside a chat model');
  const backend = values.backend as BackendName | undefined;
  if (backend !== undefined && backend !== 'native' && backend !== 'reference') throw new UsageError(`--backend expects native or reference, got '${backend}'`);
  const kvDtype = kvCacheDtype(values['kv-cache-dtype']);
  const dtype = loadDtype(values.dtype)?.dtype;
  const positive = (name: string): number | undefined => {
    const v = values[name as keyof typeof values] as string | undefined;
    if (v === undefined) return undefined;
    const n = num(v, name, 0, true);
    if (n < 1) throw new UsageError(`--${name} expects an integer >= 1, got '${v}'`);
    return n;
  };
  const size = (name: 'kv-cache-memory' | 'max-body' | 'guard-kv-cache-memory'): number | undefined => {
    const v = values[name];
    if (v === undefined) return undefined;
    try { return parseSize(v); } catch (e) { throw new UsageError(`--${name}: ${(e as Error).message}`); }
  };
  const port = values.port === undefined ? 8000 : num(values.port, 'port', 0, true);
  if (port < 0 || port > 65535) throw new UsageError(`--port expects 0..65535, got ${port}`);
  const grace = num(values['shutdown-grace'], 'shutdown-grace', 30);
  if (grace < 0) throw new UsageError(`--shutdown-grace expects seconds >= 0, got ${grace}`);
  if (values['api-key'] === '') throw new UsageError('--api-key must not be empty');
  const allowedOrigins = values['allowed-origins']?.split(',').map((o) => o.trim());
  if (allowedOrigins) {
    const { checkAllowedOrigins } = await import('../serve/cors.js');
    try { checkAllowedOrigins(allowedOrigins, '--allowed-origins'); } catch (e) { throw new UsageError((e as Error).message); }
  }
  const modelPath = modelOrBuiltin(values.model, 'serve');
  const loraModules = (values['lora-modules'] ?? []).map((m) => {
    const eq = m.indexOf('=');
    if (eq <= 0 || eq === m.length - 1) throw new UsageError(`--lora-modules expects NAME=DIR, got '${m}'`);
    return { name: m.slice(0, eq), path: m.slice(eq + 1) };
  });
  const dup = loraModules.find((m, i) => loraModules.findIndex((o) => o.name === m.name) !== i);
  if (dup) throw new UsageError(`--lora-modules names ${dup.name} twice`);
  if (values['enable-lora-loading'] && values['lora-root'] === undefined) throw new UsageError('--enable-lora-loading needs --lora-root DIR (runtime adapter paths must lie inside it)');
  if (values['lora-root'] !== undefined && !values['enable-lora-loading']) throw new UsageError('--lora-root only matters with --enable-lora-loading');
  const maxCpuLoras = positive('max-cpu-loras');
  if (maxCpuLoras !== undefined && maxCpuLoras < (positive('max-loras') ?? 4)) throw new UsageError(`--max-cpu-loras ${maxCpuLoras} is below --max-loras ${positive('max-loras') ?? 4}: the adapters of one step must fit in host memory`);
  if (values.guardrails && values['guard-model'] === undefined) throw new UsageError('--guardrails needs --guard-model PATH (the guard that judges the answers)');
  for (const f of ['guard-window', 'guard-kv-cache-memory'] as const) {
    if (values[f] !== undefined && values['guard-model'] === undefined) throw new UsageError(`--${f} only matters with --guard-model PATH`);
  }
  if (values['guard-model'] !== undefined && !existsSync(values['guard-model'])) {
    throw new UsageError(`--guard-model ${values['guard-model']}: no such file or directory; expected a Llama Guard checkpoint (an HF directory or a .gguf file)`);
  }
  const swapSpace = swapSpaceFlag(values['swap-space']); // 0: preemption recomputes
  const pp = pipelineFlags(values);
  if (pp && swapSpace) throw new UsageError('--swap-space does not combine with --pipeline-parallel-size yet: each stage holds its own layers\' KV, and preemption recomputes there');
  if (pp && offload) throw new UsageError('--pipeline-parallel-size and --weights-memory / --offload-ratio do not combine yet');
  if (pp) {
    // refused here, on every rank, before rank 0 listens: the stages hold no adapter factors and no draft model's KV
    const spec = values.speculative;
    if (spec !== undefined && spec !== 'ngram' && spec !== 'suffix') throw new UsageError(`--speculative ${spec}: a draft model or proposer module is not supported with --pipeline-parallel-size yet; --speculative ngram and suffix are`);
    if (loraModules.length) throw new UsageError('--lora-modules is not supported with --pipeline-parallel-size yet (the stages hold no adapter factors)');
    if (values['enable-lora-loading']) throw new UsageError('--enable-lora-loading is not supported with --pipeline-parallel-size yet (the stages hold no adapter factors)');
  }
  if (pp && Number(process.env.OMPI_COMM_WORLD_RANK) > 0) {
    // ranks ≥ 1 are stages: no HTTP; rank 0's engine worker drives them
    await (await import('../parallel/serve-stage.js')).serveStage({
      model: modelPath, stages: pp.stages, backend, threads: threadsFlag(values.threads), load: loadDtype(values.dtype), kvCacheMemory: size('kv-cache-memory'),
      kvDtype, blockSize: positive('block-size'), maxNumSeqs: positive('max-num-seqs'),
    });
    return 0;
  }

  const stop = new Promise<string>((resolve) => {
    for (const sig of ['SIGTERM', 'SIGINT'] as const) process.once(sig, () => resolve(sig));
  });
  const { startServer, defaultModelName, preflight, MODEL_EXPECTED } = await import('../serve/server.js'); // after the flags: a usage error does not load the server
  // a draft model or proposer module that cannot load is refused before "listening", as a --guard-model is
  const spec = specSource(values.speculative);
  if (spec !== undefined && spec !== 'ngram' && spec !== 'suffix') {
    const module = speculativeModuleOf(spec)?.module;
    if (module !== undefined && !existsSync(module)) throw new UsageError(`--speculative ${spec}: no such file ${module}; expected a proposer module (its default export makes a Proposer)`);
    if (module === undefined) {
      try { preflight({ model: spec }, '--speculative', `ngram, suffix, module:PATH or a draft model: ${MODEL_EXPECTED}`); } catch (e) { throw new UsageError((e as Error).message); }
    }
  }
  const { reservedAdapterName } = await import('../serve/lora-routes.js');
  for (const m of loraModules) {
    const reserved = reservedAdapterName(m.name, values['model-name'] ?? defaultModelName(modelPath));
    if (reserved) throw new UsageError(`--lora-modules ${m.name}=${m.path}: ${reserved}`);
  }
  const server = await startServer({
    model: modelPath, host: values.host, port, apiKey: values['api-key'] ?? null, modelName: values['model-name'],
    threads: threadsFlag(values.threads), backend, kvCacheMemory: size('kv-cache-memory'), kvPrefault: !!values['kv-prefault'], swapSpace,
    speculative: specSource(values.speculative), numSpeculativeTokens: draftTokens(values['num-speculative-tokens'], 'num-speculative-tokens'),
    numPredictionTokens: draftTokens(values['num-prediction-tokens'], 'num-prediction-tokens'),
    kvDtype, dtype, blockSize: positive('block-size'),
    maxBatchedTokens: positive('max-batched-tokens'), maxNumSeqs: positive('max-num-seqs'), maxQueue: positive('max-queue'),
    // the batch lane widens only in one process (a pipeline's stages size their KV and micro-batches by --max-num-seqs)
    maxBatchSeqs: pp ? undefined : (await import('./batch.js')).batchLaneWidth(positive('max-num-seqs'), positive('batch-max-num-seqs')),
    bodyLimit: size('max-body'), ui: !values['no-ui'], dataDir: values['no-batch'] ? null : values['data-dir'] ?? './floe-data',
    loraModules, maxLoras: positive('max-loras'), maxLoraRank: positive('max-lora-rank'),
    enableLoraLoading: !!values['enable-lora-loading'], loraRoot: values['lora-root'] ?? null, offload,
    jobsThreads: threadsFlag(values['jobs-threads'], 'jobs-threads'), maxCpuLoras,
    guardModel: values['guard-model'] ?? null, guardrails: !!values.guardrails, guardWindow: positive('guard-window'), guardKvCacheMemory: size('guard-kv-cache-memory'),
    task, ...(await (await import('./rag.js')).ragServeOptions(values['rag-db'], values['embedding-model'], task)),
    pipeline: pp ?? undefined, allowedOrigins,
  });
  const outcome = await Promise.race([stop, server.ready.then(() => stop, (e: Error) => e)]);
  if (outcome instanceof Error) {
    process.stderr.write(`floe serve: cannot load ${modelPath}: ${outcome.message}\n`);
    await server.close(0);
    return 1;
  }
  process.stdout.write(`floe serve: ${outcome}: stopping (running requests get ${grace} s to finish)\n`);
  await server.close(grace * 1000);
  process.stdout.write('floe serve: stopped\n');
  // Anything still holding the event loop (a stuck socket) must not keep a stopped server alive.
  setTimeout(() => process.exit(0), 1000).unref();
  return 0;
}

async function finetuneCmd(args: string[]): Promise<number> {
  const { finetune } = await import('../train/trainer.js');
  const { OBJECTIVE_FLAGS, TRAIN_FLAGS, objectiveOption, setupAsUsage, trainingOptions } = await import('./train-args.js');
  const { FINETUNE_PIPELINE_FLAGS, finetunePipelineCmd, microBatchesFlag } = await import('./finetune-pipeline.js');
  const { values: v } = parse(args, { model: { type: 'string' }, ...TRAIN_FLAGS, ...OBJECTIVE_FLAGS, ...PIPELINE_FLAGS, ...FINETUNE_PIPELINE_FLAGS });
  const options = trainingOptions(v);
  const pp = pipelineFlags(v);
  const mb = microBatchesFlag(v['micro-batches'], pp);
  const model = modelOrBuiltin(v.model, 'finetune');
  const s = pp ? await finetunePipelineCmd({ model, ...options, ...(await objectiveOption(v)) }, pp, mb)
    : await setupAsUsage(finetune({ model, ...options, ...(await objectiveOption(v)) }));
  if (!s) return 0; // a pipeline stage other than rank 0
  if (v.json) { process.stdout.write(JSON.stringify(s) + '\n'); return 0; }
  const mib = (b: number) => `${(b / 2 ** 20).toFixed(1)} MiB`;
  const ev = (e: typeof s.eval) => (e ? `loss ${e.eval_loss.toFixed(4)}, perplexity ${e.eval_ppl.toFixed(3)}` : 'none');
  process.stdout.write([
    `steps        ${s.startStep} -> ${s.steps}, ${s.tokens.toLocaleString('en-US')} tokens, ${s.seconds.toFixed(1)} s, ${s.tokensPerSecond.toFixed(1)} tok/s`,
    `final loss   ${s.finalLoss === null ? '-' : s.finalLoss.toFixed(4)}`,
    `eval         ${s.initialEval ? `before: ${ev(s.initialEval)}; after: ` : ''}${ev(s.eval)}`,
    `trainable    ${s.trainableParams.toLocaleString('en-US')} parameters (${options.full ? 'full fine-tuning' : `LoRA${s.base.converted ? `, frozen base in ${s.base.linear} (--dtype ${s.base.converted})` : ''}`})`,
    `memory       peak RSS ${mib(s.peakRssBytes)}, saved activations ${mib(s.activationBytes)}`,
    `output       ${s.output}`,
  ].join('\n') + '\n');
  return 0;
}

/** --out names a directory to write (existing or to be made): refused before any work when it, or a folder above it, is a file. */
function outDirFlag(out: string, what: string): void {
  for (let d = resolvePath(out); ; d = dirname(d)) {
    if (existsSync(d)) {
      if (!statSync(d).isDirectory()) throw new UsageError(`--out ${out}: ${d} is a file, not a directory; give a directory for ${what}`);
      return;
    }
    if (dirname(d) === d) return;
  }
}

/** Where quantize writes inside an existing --out until the output is complete (a leftover of an interrupted run is cleared). */
const PARTIAL = '.floe-quantize-partial';

/**
 * --out of a command that writes a whole new model: a missing or empty directory (missing folders above it are made),
 * not the input `model`, that this process may write; refused before any work. A non-empty one is refused rather than
 * mixed with (or stripped of) what it holds.
 */
function newOutDirFlag(out: string, model: string, what: string): void {
  outDirFlag(out, what);
  const abs = resolvePath(out);
  if (existsSync(abs)) {
    if (existsSync(model) && realpathSync(abs) === realpathSync(model)) throw new UsageError(`--out ${out} is the input directory (--model ${model}); give another directory for ${what}`);
    const held = readdirSync(abs).filter((n) => n !== PARTIAL);
    if (held.length > 0) {
      const shown = held.slice(0, 3).join(', ') + (held.length > 3 ? `, … (${held.length} entries)` : '');
      throw new UsageError(`--out ${out} is not empty (it holds ${shown}); give a new or empty directory for ${what}`);
    }
  }
  // --out itself, else the nearest existing folder above it (where the missing ones are made)
  let d = abs;
  while (!existsSync(d) && dirname(d) !== d) d = dirname(d);
  try {
    accessSync(d, fsConstants.W_OK);
  } catch {
    throw new UsageError(`--out ${out}: ${d} is not writable; give a directory you can write for ${what}`);
  }
}

/**
 * Where the output is written before it becomes `out`: beside a missing `out` (then renamed to it), inside an existing
 * empty one (then moved up file by file, config.json last; the directory itself stays: a mount point, a shell's working
 * directory, its owner and mode). Until the last rename `out` holds no config.json, so no half-written model loads.
 */
function stageFor(out: string): string {
  return existsSync(out) ? join(out, PARTIAL) : join(dirname(out), `.${basename(out)}${PARTIAL}`);
}

function moveOutput(stage: string, out: string): void {
  if (!existsSync(out)) { renameSync(stage, out); return; }
  const names = readdirSync(stage).sort((a, b) => Number(a === 'config.json') - Number(b === 'config.json'));
  for (const n of names) renameSync(join(stage, n), join(out, n));
}

async function mergeCmd(args: string[]): Promise<number> {
  const { readPeftAdapter } = await import('../model/adapter.js');
  const { mergeAdapter, writeHfModel } = await import('../train/export.js');
  const { values: v } = parse(args, { model: { type: 'string' }, adapter: { type: 'string' }, out: { type: 'string' }, dtype: { type: 'string' } });
  if (!v.model || !v.adapter || !v.out) throw new UsageError('usage: floe merge --model BASE --adapter DIR --out DIR [--dtype f32|bf16]');
  outDirFlag(v.out, 'the merged model');
  const base = await loadModel(v.model);
  const dtype = v.dtype ?? ([...base.tensors.values()].every((t) => t.dtype === 'f32') ? 'f32' : 'bf16');
  if (dtype !== 'f32' && dtype !== 'bf16') throw new UsageError(`--dtype expects f32 or bf16, got '${dtype}'`);
  const adapter = readPeftAdapter(v.adapter, base.config);
  const merged = mergeAdapter(base.config, base.tensors, adapter);
  writeHfModel(v.out, base.config, base, merged, dtype);
  base.dispose();
  process.stderr.write(`[floe] merged ${v.adapter} (r=${adapter.config.rank}, ${adapter.config.targets.join(',')}) into ${v.model} -> ${v.out} (${dtype})\n`);
  return 0;
}

async function quantizeCmd(args: string[]): Promise<number> {
  const { quantizeModelDir } = await import('../formats/fp8-export.js');
  const { values: v } = parse(args, {
    model: { type: 'string' }, out: { type: 'string' }, fp8: { type: 'boolean' }, block: { type: 'string' }, 'per-row': { type: 'boolean' },
    'quantize-head': { type: 'boolean' }, 'quantize-embed': { type: 'boolean' }, json: { type: 'boolean' },
  });
  if (!v.model || !v.out) throw new UsageError('usage: floe quantize --model IN --out OUT --fp8 [--block 128 | --per-row]');
  if (!v.fp8) throw new UsageError('give the target format: --fp8 (E4M3 weights with f32 scales)');
  if (v.block !== undefined && v['per-row']) throw new UsageError('give one of --block B or --per-row, not both');
  const block = num(v.block, 'block', 128, true);
  if (block < 1) throw new UsageError(`--block expects an integer >= 1, got ${block}`);
  const scheme = v['per-row'] ? { kind: 'per-row' as const } : { kind: 'block' as const, block };
  const out = resolvePath(v.out);
  newOutDirFlag(v.out, v.model, 'the FP8 model');
  // a failed or interrupted run leaves no --out that loads half a model (weights and config.json without the tokenizer)
  const stage = stageFor(out);
  rmSync(stage, { recursive: true, force: true });
  mkdirSync(dirname(out), { recursive: true });
  const t0 = performance.now();
  let r;
  try {
    r = await quantizeModelDir(v.model, stage, { scheme, quantizeHead: !!v['quantize-head'], quantizeEmbed: !!v['quantize-embed'] });
    moveOutput(stage, out);
  } finally {
    rmSync(stage, { recursive: true, force: true });
  }
  const files = r.files.map((f) => join(v.out!, relativePath(stage, f)));
  const seconds = (performance.now() - t0) / 1000;
  const layout = scheme.kind === 'block' ? `fp8 ${block}x${block} blocks (weight_scale_inv)` : 'compressed-tensors per-row (weight_scale)';
  if (v.json) {
    process.stdout.write(JSON.stringify({ out: v.out, layout, quantized: r.quantized.length, files, bytes_in: r.bytesIn, bytes_out: r.bytesOut, seconds }) + '\n');
  } else {
    const mib = (b: number) => `${(b / 2 ** 20).toFixed(1)} MiB`;
    process.stderr.write(`[floe] ${r.quantized.length} tensors -> ${layout}; ${mib(r.bytesIn)} -> ${mib(r.bytesOut)} in ${seconds.toFixed(1)} s -> ${v.out}\n`);
  }
  return 0;
}

async function evalCmd(args: string[]): Promise<number> {
  const { encodeEvalRecords, evalSamples, readEvalRecords } = await import('../train/eval.js');
  const { values: v } = parse(args, {
    model: { type: 'string' }, data: { type: 'string' }, adapter: { type: 'string' }, dtype: { type: 'string' }, 'kv-cache-dtype': { type: 'string' },
    'max-seq-len': { type: 'string' }, 'max-tokens': { type: 'string' }, 'train-on-prompt': { type: 'boolean' }, threads: { type: 'string' },
    backend: { type: 'string' }, json: { type: 'boolean' },
  });
  if (!v.data) throw new UsageError('usage: floe eval [--model PATH] --data FILE [--adapter DIR] [--dtype fp8|bf16] [--kv-cache-dtype auto|f32|bf16|fp8] [--max-seq-len N] [--train-on-prompt] [--json]');
  const backend = v.backend as BackendName | undefined;
  if (backend !== undefined && backend !== 'native' && backend !== 'reference') throw new UsageError(`--backend expects native or reference, got '${backend}'`);
  const kvDtype = kvCacheDtype(v['kv-cache-dtype']);
  const load = loadDtype(v.dtype);
  const threads = threadsFlag(v.threads);
  const maxSeqLenFlag = optNum(v['max-seq-len'], 'max-seq-len', true, { min: 2 });
  const maxTokens = optNum(v['max-tokens'], 'max-tokens', true, { min: 1 });
  const trainOnPrompt = !!v['train-on-prompt'];
  const modelPath = modelOrBuiltin(v.model, 'eval');
  const records = readEvalRecords(v.data); // every line checked before the model loads
  const opened = await openModel(modelPath, { backend, threads, load });
  try {
    if (!opened.tokenizer) throw new Error(`${modelPath} has no tokenizer; eval needs one to encode the texts`);
    const context = opened.model.config.maxPositionEmbeddings;
    if (maxSeqLenFlag !== undefined && maxSeqLenFlag > context) throw new UsageError(`--max-seq-len ${maxSeqLenFlag} exceeds the context of ${modelPath} (${context} tokens); give at most ${context}`);
    const maxSeqLen = maxSeqLenFlag ?? context;
    // the records as finetune reads its data and --eval files: the same tokens, masks and chat template
    const { trainingTemplate } = await import('../train/trainer.js');
    const data = encodeEvalRecords(records, opened.tokenizer, await trainingTemplate(opened.loaded), { maxSeqLen, trainOnPrompt });
    const model = v.adapter ? (await import('../model/adapter.js')).applyAdapter(opened.model, v.adapter) : opened.model;
    const r = evalSamples(model, data.samples, { maxTokens, kvDtype });
    const kv = kvDtypeFlagName(kvDtype ?? defaultKvDtype(opened.model));
    // the formats of the records scored (with --max-tokens, the first r.records of them)
    const count = (k: string) => data.kinds.slice(0, r.records).filter((x) => x === k).length;
    const formats = { text: count('text'), prompt_completion: count('completion'), messages: count('chat') };
    if (v.json) {
      process.stdout.write(JSON.stringify({
        model: modelPath, adapter: v.adapter ?? null, data: v.data, dtype: v.dtype ?? null, kv_cache_dtype: kv, records: r.records, tokens: r.tokens,
        loss: r.loss, perplexity: r.perplexity, formats, train_on_prompt: trainOnPrompt, max_seq_len: maxSeqLen, truncated: data.truncated,
        dropped: data.dropped, seconds: r.seconds,
      }) + '\n');
    } else {
      const scored = [
        formats.text ? `${formats.text} text (every token)` : '',
        formats.prompt_completion ? `${formats.prompt_completion} prompt/completion (${trainOnPrompt ? 'every token' : 'the completion and EOS'})` : '',
        formats.messages ? `${formats.messages} chat (${trainOnPrompt ? 'every token' : 'the assistant turns'}, through the chat template)` : '',
      ].filter((x) => x !== '').join(', ');
      const cut = [data.truncated ? `${data.truncated} cut to ${maxSeqLen} tokens` : '', data.dropped ? `${data.dropped} with no token to score left out` : ''].filter((x) => x !== '');
      process.stdout.write(`perplexity ${r.perplexity.toFixed(4)} (loss ${r.loss.toFixed(5)} nats/token) over ${r.tokens} tokens in ${r.records} records; ` +
        `scored: ${scored}${cut.length ? ` (${cut.join('; ')})` : ''}; weights ${v.dtype ?? 'as stored'}, kv ${kv}, ${r.seconds.toFixed(1)} s\n`);
    }
  } finally {
    opened.loaded.dispose();
  }
  return 0;
}

/** --num-speculative-tokens / --num-prediction-tokens (`flag`): a cap on draft tokens a step, an integer >= 1. */
function draftTokens(v: string | undefined, flag: 'num-speculative-tokens' | 'num-prediction-tokens'): number | undefined {
  if (v === undefined) return undefined;
  return num(v, flag, 0, true, { min: 1 });
}

/** --speculative: ngram, suffix, a draft model path or module:PATH (a proposer module). */
function specSource(v: string | undefined): string | undefined {
  if (v === '') throw new UsageError('--speculative expects ngram, suffix, a draft model path or module:PATH');
  return v;
}
