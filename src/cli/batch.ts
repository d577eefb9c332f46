// `floe batch`: an OpenAI batch input file run offline through the server's own routes and engine (no socket),
// state in a sidecar SQLite store so that re-running the same command resumes; output lines as the Batch API's.

import { createHash } from 'node:crypto';
import { existsSync, statSync } from 'node:fs';
import { dirname } from 'node:path';
import type { BackendName } from '../backend/select.js';
import { startEngineChecked } from '../engine/client.js';
import { ENGINE_DEFAULTS, type EngineClient } from '../engine/protocol.js';
import { fileChunks } from '../formats/lines.js';
import { BatchService, outputLine } from '../platform/batch.js';
import { createFile, FileValidationError, parseBatchFile, writeAtomic } from '../platform/files.js';
import { Store } from '../platform/store.js';
import { createApp } from '../serve/app.js';
import { injectExecutor } from '../serve/batch-routes.js';
import { defaultModelName, loadTextTools } from '../serve/server.js';
import { kvCacheDtype, loadDtype, modelOrBuiltin, optNum, parse, parseSize, threadsFlag, UsageError } from './args.js';

/**
 * The batch lane's width for `floe serve` / `floe batch`: --batch-max-num-seqs, by default BATCH_LANE_FACTOR ×
 * --max-num-seqs (on CPU the q8_0 / bf16 GEMMs run about twice the FLOP/s at 256 rows as at 64, BENCHMARKS.md "Batch
 * API throughput"); never narrower than the interactive width.
 */
export const BATCH_LANE_FACTOR = 4;
export function batchLaneWidth(maxNumSeqs: number | undefined, given: number | undefined): number {
  const n = maxNumSeqs ?? ENGINE_DEFAULTS.maxNumSeqs;
  const w = given ?? BATCH_LANE_FACTOR * n;
  if (w < n) throw new UsageError(`--batch-max-num-seqs ${w} is below --max-num-seqs ${n}: the batch lane is at least as wide as the interactive one`);
  return w;
}

export async function batchCmd(args: string[]): Promise<number> {
  const str = { type: 'string' } as const;
  const { values: v } = parse(args, {
    model: str, input: str, output: str, state: str, threads: str, backend: str, 'kv-cache-memory': str, 'kv-cache-dtype': str,
    dtype: str, 'max-num-seqs': str, 'batch-max-num-seqs': str, 'max-batched-tokens': str, quiet: { type: 'boolean' },
  });
  if (!v.input) throw new UsageError('--input FILE.jsonl is required');
  if (!v.output) throw new UsageError('--output FILE.jsonl is required');
  const backend = v.backend as BackendName | undefined;
  if (backend !== undefined && backend !== 'native' && backend !== 'reference') throw new UsageError(`--backend expects native or reference, got '${backend}'`);
  let kvCacheMemory: number | undefined;
  try { kvCacheMemory = v['kv-cache-memory'] === undefined ? undefined : parseSize(v['kv-cache-memory']); } catch (e) { throw new UsageError(`--kv-cache-memory: ${(e as Error).message}`); }
  const engineOpts = {
    threads: threadsFlag(v.threads), backend, kvCacheMemory, kvDtype: kvCacheDtype(v['kv-cache-dtype']),
    dtype: loadDtype(v.dtype)?.dtype, maxNumSeqs: optNum(v['max-num-seqs'], 'max-num-seqs', true, { min: 1 }),
    maxBatchSeqs: batchLaneWidth(optNum(v['max-num-seqs'], 'max-num-seqs', true, { min: 1 }), optNum(v['batch-max-num-seqs'], 'batch-max-num-seqs', true, { min: 1 })),
    maxBatchedTokens: optNum(v['max-batched-tokens'], 'max-batched-tokens', true, { min: 1 }),
  };
  const modelPath = modelOrBuiltin(v.model, 'batch');
  if (!existsSync(v.input)) throw new UsageError(`--input: no file ${v.input}`);
  if (statSync(v.input).isDirectory()) throw new UsageError(`--input ${v.input} is a directory; expected a JSONL file`);
  checkOutputPath(v.output, v.input);
  const stateDir = v.state ?? `${v.output}.floe-batch`;
  if (existsSync(stateDir) && !statSync(stateDir).isDirectory()) {
    throw new UsageError(`${v.state === undefined ? `the resume state ${stateDir} (--state, default OUTPUT.floe-batch)` : `--state ${stateDir}`} is a file; expected a directory (made when missing)`);
  }
  let parsed;
  // line by line, and the bytes hashed and stored a chunk at a time: an input past the longest string (~512 MiB) runs too
  try { parsed = parseBatchFile(v.input); } catch (e) {
    if (e instanceof FileValidationError) throw new UsageError(`--input ${v.input}: ${e.message}`);
    throw e;
  }
  const lines = parsed.map((l, i) => ({ ...l, n: i + 1 }));
  const endpoint = lines[0]!.url;
  const other = lines.find((l) => l.url !== endpoint);
  if (other) throw new UsageError(`${v.input} line ${other.n}: url ${other.url} differs from line 1's ${endpoint}; one batch runs one endpoint`);

  // the same input (bytes, endpoint, model) continues the batch a previous run left
  const hash = createHash('sha256');
  for (const c of fileChunks(v.input)) hash.update(c);
  const key = hash.update('\0' + endpoint + '\0' + modelPath).digest('hex');
  const store = new Store(stateDir);
  const prev = store.listBatches(null, 1_000_000).find((b) => b.metadata !== null && JSON.parse(b.metadata).input_key === key && !['failed', 'cancelled', 'expired'].includes(b.status));
  const log = v.quiet ? () => {} : (s: string) => process.stderr.write(s);
  if (prev && prev.status !== 'completed') log(`[floe] batch: resuming ${prev.id}: ${store.doneLines(prev.id).size} of ${lines.length} lines already done\n`);

  let engine: EngineClient | null = null;
  let service: BatchService | null = null;
  try {
    let id = prev?.id;
    if (prev?.status !== 'completed') {
      const modelName = defaultModelName(modelPath);
      const [e, tools] = await Promise.all([startEngineChecked({ model: modelPath, modelId: modelName, ...engineOpts }), loadTextTools(modelPath)]);
      engine = e;
      const serve = createApp({ modelName, ui: false });
      serve.ready({ engine: e, tokenizer: tools.tokenizer, template: tools.template, defaults: tools.defaults });
      await serve.app.ready();
      const progress = new Progress(lines.length, store, log);
      // offline: no completion window (a run stopped on Friday and re-run on Monday resumes, never expires)
      service = new BatchService(store, injectExecutor(serve.app, null), { window: () => 2 * (e.info.maxBatchSeqs ?? e.info.maxNumSeqs), onLine: () => progress.tick(), expire: false });
      if (id === undefined) {
        const file = createFile(store, 'batch', v.input, fileChunks(v.input), lines.length);
        id = service.create({ input_file_id: file.id, endpoint, metadata: { input_key: key } }).id;
      } else {
        service.resume(id); // only this input's batch: another input's unfinished batch in the same --state waits for its own command
      }
      progress.start(store.doneLines(id).size);
      const b = await service.wait(id);
      progress.end();
      if (b.status !== 'completed') throw new Error(`batch ${id} ended ${b.status}${b.errors ? `: ${JSON.parse(b.errors).data[0]?.message}` : ''}`);
      await serve.app.close();
    }
    const c = store.counts(id!);
    writeAtomic(v.output, (function* () { for (const r of store.results(id!)) yield outputLine(r); })());
    log(`[floe] batch: ${c.completed} line${c.completed === 1 ? '' : 's'} succeeded, ${c.failed} failed -> ${v.output}\n`);
    return 0;
  } finally {
    await service?.close();
    await engine?.shutdown(0);
    store.close();
  }
}

/**
 * The output is written only when every line has run: a path that cannot take it (its folder missing, or a folder
 * itself) is a usage error before the engine loads, not a failure after the whole batch.
 */
function checkOutputPath(output: string, input: string): void {
  const dir = dirname(output);
  if (!existsSync(dir)) throw new UsageError(`--output ${output}: the directory ${dir} does not exist`);
  if (!statSync(dir).isDirectory()) throw new UsageError(`--output ${output}: ${dir} is not a directory`);
  const out = statSync(output, { throwIfNoEntry: false });
  if (out?.isDirectory()) throw new UsageError(`--output ${output} is a directory; expected a file path`);
  // the same file by any name (./x, a symlink, a hard link): the results would replace the requests
  const inp = statSync(input);
  if (out && out.dev === inp.dev && out.ino === inp.ino) throw new UsageError(`--output ${output} is the --input file ${input}: the results would replace the requests; give another --output`);
}

/** A progress bar on a TTY, plain lines (every 10 %) otherwise. */
class Progress {
  private done = 0;
  private t0 = 0;
  private startDone = 0;
  private lastTenth = -1;
  private readonly tty = !!process.stderr.isTTY;

  constructor(readonly total: number, readonly store: Store, readonly log: (s: string) => void) {}

  start(done: number): void {
    this.done = this.startDone = done;
    this.t0 = performance.now();
    this.draw();
  }

  tick(): void {
    this.done++;
    this.draw();
  }

  end(): void {
    if (this.tty) this.log('\n');
  }

  private draw(): void {
    const s = (performance.now() - this.t0) / 1000;
    const rate = s > 0 ? (this.done - this.startDone) / s : 0;
    const pct = this.total ? this.done / this.total : 1;
    const eta = rate > 0 ? `, ETA ${Math.ceil((this.total - this.done) / rate)} s` : '';
    if (this.tty) {
      const w = 30;
      const bar = '#'.repeat(Math.round(pct * w)).padEnd(w, '.');
      this.log(`\r[floe] batch [${bar}] ${this.done}/${this.total} lines, ${rate.toFixed(1)} lines/s${eta}  `);
      return;
    }
    const tenth = Math.floor(pct * 10);
    if (tenth === this.lastTenth) return;
    this.lastTenth = tenth;
    this.log(`[floe] batch: ${this.done}/${this.total} lines (${Math.round(pct * 100)} %), ${rate.toFixed(1)} lines/s${eta}\n`);
  }
}
