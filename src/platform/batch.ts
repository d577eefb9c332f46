// Batches (OpenAI /v1/batches): lines fed to an executor in a bounded window, each result recorded durably in the
// store, output and error files assembled atomically at the end; a restart resumes unfinished batches.

import { createHash, randomUUID } from 'node:crypto';
import { setMaxListeners } from 'node:events';
import { existsSync, rmSync } from 'node:fs';
import { BATCH_ENDPOINTS, createFile, FileValidationError, keepCopy, parseBatchFile, type BatchEndpoint, type BatchInputLine } from './files.js';
import { metadataProblem } from './metadata.js';
import { requestId } from './request-id.js';
import type { BatchRow, BatchStatus, LineResult, Store } from './store.js';

/** One request's answer: HTTP status, JSON body text and the x-request-id it carried (a fresh one when absent). */
export interface ExecResult {
  readonly status: number;
  readonly body: string;
  readonly requestId?: string;
}

/** Runs one batch line through the endpoint (at low priority); aborting the signal cancels it. */
export type Executor = (url: BatchEndpoint, body: Record<string, unknown>, signal: AbortSignal) => Promise<ExecResult>;

export interface BatchOptions {
  readonly window: () => number; // lines in flight at once
  readonly retryMs?: number; // wait before retrying a line the executor could not take yet (429, model loading); default 200
  /** Whether a result means "not now" (retry) or "stopping" (leave the line for a restart); default: 429 and 503 model_loading retry, other 503s stop. */
  readonly classify?: (r: ExecResult) => 'done' | 'retry' | 'stop';
  readonly onLine?: (batchId: string, line: number) => void; // a line was executed (whatever its status)
  /** Whether batches end `expired` past expires_at (the API's completion window); default true. `floe batch` runs offline without one. */
  readonly expire?: boolean;
}

/** A request the API refuses (400 / 404 / 409) with what / where / why. */
export class BatchApiError extends Error {
  constructor(readonly status: 400 | 404 | 409, message: string, readonly param: string | null = null) {
    super(message);
  }
}

export const COMPLETION_WINDOWS: Record<string, number> = { '24h': 24 * 3600 };

/**
 * The status_code recorded for a line that never ran (the batch expired first): its body is the Batch API's `error`
 * object, and its output line has `response: null` (OpenAI's `batch_expired` lines).
 */
export const NOT_RUN = 0;

/** One line of an output or error file: {id, custom_id, response: {status_code, request_id, body}, error}. */
export function outputLine(res: LineResult): string {
  const id = `batch_req_${res.request_id.replace(/^req_/, '')}`; // results recorded before request ids had the prefix have none
  if (res.status_code === NOT_RUN) {
    return JSON.stringify({ id, custom_id: res.custom_id, response: null, error: JSON.parse(res.body) }) + '\n';
  }
  let body: unknown;
  try {
    body = JSON.parse(res.body);
  } catch {
    body = res.body; // not JSON (should not happen): kept as text
  }
  return JSON.stringify({ id, custom_id: res.custom_id, response: { status_code: res.status_code, request_id: res.request_id, body }, error: null }) + '\n';
}

const now = (): number => Math.floor(Date.now() / 1000);

function defaultClassify(r: ExecResult): 'done' | 'retry' | 'stop' {
  if (r.status === 429) return 'retry';
  if (r.status === 503) {
    const code = (() => { try { return (JSON.parse(r.body) as { error?: { code?: string } }).error?.code; } catch { return undefined; } })();
    // loading clears up by itself; any other 503 (shutting down, engine gone) leaves the line for a restart
    return code === 'model_loading' ? 'retry' : 'stop';
  }
  return 'done';
}

interface Running {
  readonly done: Promise<void>;
  readonly ac: AbortController;
  cancel: boolean;
}

export class BatchService {
  private readonly running = new Map<string, Running>();
  private stopping = false;
  private readonly classify: (r: ExecResult) => 'done' | 'retry' | 'stop';

  constructor(readonly store: Store, private readonly exec: Executor, private readonly opts: BatchOptions) {
    this.classify = opts.classify ?? defaultClassify;
  }

  /** Pick up every batch a previous process left unfinished (or only the batch `id`). */
  resume(id?: string): void {
    for (const b of this.store.unfinishedBatches()) if (id === undefined || b.id === id) this.start(b.id);
  }

  create(req: { input_file_id?: unknown; endpoint?: unknown; completion_window?: unknown; metadata?: unknown }): BatchRow {
    if (typeof req.input_file_id !== 'string') throw new BatchApiError(400, `input_file_id must be a file id string, got ${JSON.stringify(req.input_file_id)}`, 'input_file_id');
    const file = this.store.getFile(req.input_file_id);
    if (!file) throw new BatchApiError(404, `no file with id '${req.input_file_id}'`, 'input_file_id');
    if (file.purpose !== 'batch') throw new BatchApiError(400, `file '${file.id}' has purpose '${file.purpose}'; a batch input needs purpose 'batch'`, 'input_file_id');
    if (!(BATCH_ENDPOINTS as readonly unknown[]).includes(req.endpoint)) {
      throw new BatchApiError(400, `endpoint must be one of ${BATCH_ENDPOINTS.join(', ')}, got ${JSON.stringify(req.endpoint)}`, 'endpoint');
    }
    const window = req.completion_window ?? '24h';
    if (typeof window !== 'string' || !(window in COMPLETION_WINDOWS)) {
      throw new BatchApiError(400, `completion_window must be one of ${Object.keys(COMPLETION_WINDOWS).join(', ')}, got ${JSON.stringify(window)}`, 'completion_window');
    }
    const md = req.metadata ?? null;
    const mdProblem = metadataProblem(md);
    if (mdProblem) throw new BatchApiError(400, mdProblem.message, mdProblem.param);
    if (this.stopping) throw new BatchApiError(409, 'the server is shutting down; create the batch again after it restarts');
    const t = now();
    const row: Omit<BatchRow, 'seq'> = {
      id: `batch_${randomUUID().replaceAll('-', '')}`, input_file_id: file.id, endpoint: req.endpoint as string, completion_window: window,
      metadata: md === null ? null : JSON.stringify(md), status: 'validating', errors: null, output_file_id: null, error_file_id: null,
      total: file.lines, created_at: t, in_progress_at: null, expires_at: t + COMPLETION_WINDOWS[window]!, finalizing_at: null,
      completed_at: null, failed_at: null, expired_at: null, cancelling_at: null, cancelled_at: null,
    };
    // the batch reads its own copy: the input file may be deleted while it runs, and a restart must still resume it
    keepCopy(this.store.filePath(file.id), this.store.batchInputPath(row.id));
    this.store.insertBatch(row);
    this.start(row.id);
    return this.store.getBatch(row.id)!;
  }

  get(id: string): BatchRow {
    const b = this.store.getBatch(id);
    if (!b) throw new BatchApiError(404, `no batch with id '${id}'`, 'batch_id');
    return b;
  }

  cancel(id: string): BatchRow {
    const b = this.get(id);
    if (b.status === 'cancelling' || b.status === 'cancelled') return b;
    if (!['validating', 'in_progress'].includes(b.status)) throw new BatchApiError(409, `batch '${id}' is ${b.status}; only a validating or in_progress batch can be cancelled`);
    this.store.updateBatch(id, { status: 'cancelling', cancelling_at: now() });
    const r = this.running.get(id);
    if (r) {
      r.cancel = true;
      r.ac.abort();
    } else {
      this.start(id);
    }
    return this.get(id);
  }

  /** Resolves when the batch's loop ends (finished, cancelled or stopped); for tests and the CLI. */
  async wait(id: string): Promise<BatchRow> {
    await this.running.get(id)?.done;
    return this.get(id);
  }

  /** Stop every loop: lines in flight are aborted and left for a restart. */
  async close(): Promise<void> {
    this.stopping = true;
    for (const r of this.running.values()) r.ac.abort();
    await Promise.all([...this.running.values()].map((r) => r.done));
  }

  /** The OpenAI batch object. */
  object(b: BatchRow): Record<string, unknown> {
    const c = this.store.counts(b.id);
    return {
      id: b.id, object: 'batch', endpoint: b.endpoint, errors: b.errors === null ? null : JSON.parse(b.errors), input_file_id: b.input_file_id,
      completion_window: b.completion_window, status: b.status, output_file_id: b.output_file_id, error_file_id: b.error_file_id,
      created_at: b.created_at, in_progress_at: b.in_progress_at, expires_at: b.expires_at, finalizing_at: b.finalizing_at,
      completed_at: b.completed_at, failed_at: b.failed_at, expired_at: b.expired_at, cancelling_at: b.cancelling_at, cancelled_at: b.cancelled_at,
      request_counts: { total: b.total, completed: c.completed, failed: c.failed },
      metadata: b.metadata === null ? null : JSON.parse(b.metadata),
    };
  }

  private start(id: string): void {
    if (this.running.has(id) || this.stopping) return;
    const r: Running = { ac: new AbortController(), cancel: false, done: Promise.resolve() };
    setMaxListeners(0, r.ac.signal); // one listener per line in flight
    this.running.set(id, r);
    (r as { done: Promise<void> }).done = this.run(id, r)
      .catch((e: unknown) => {
        this.store.updateBatch(id, { status: 'failed', failed_at: now(), errors: JSON.stringify({ object: 'list', data: [{ code: 'internal_error', message: (e as Error).message, line: null, param: null }] }) });
        this.release(id);
      })
      .finally(() => this.running.delete(id));
  }

  private async run(id: string, r: Running): Promise<void> {
    let b = this.get(id);
    let lines: BatchInputLine[];
    try {
      // line by line: an input past the longest string (~512 MiB) reads too; a batch created before batches kept their
      // own copy reads the input file itself
      const own = this.store.batchInputPath(id);
      const path = existsSync(own) ? own : this.store.filePath(b.input_file_id);
      if (!existsSync(path)) return this.fail(id, 'invalid_file', `the input file '${b.input_file_id}' was deleted before this batch (created by an earlier floe, which kept no copy of it) finished`, null);
      lines = parseBatchFile(path);
    } catch (e) {
      // a file stored before a check it now fails (its upload passed): the batch fails before any line runs, naming the line
      return this.fail(id, 'invalid_file', (e as Error).message, e instanceof FileValidationError ? e.line : null);
    }
    if (b.status === 'validating') {
      const wrong = lines.findIndex((l) => l.url !== b.endpoint);
      if (wrong >= 0) return this.fail(id, 'mismatched_endpoint', `line ${wrong + 1}: url ${lines[wrong]!.url} differs from the batch's endpoint ${b.endpoint}`, wrong + 1);
      this.store.updateBatch(id, { status: 'in_progress', in_progress_at: now(), total: lines.length });
      b = this.get(id);
    }
    if (b.status === 'cancelling') r.cancel = true;
    if (b.status === 'in_progress') await this.feed(id, b, lines, r);
    if (r.cancel) return this.finalize(id, 'cancelled');
    // every line has a result; lines marked NOT_RUN mean the expiry below was recorded and the process stopped before its files
    if (this.store.doneLines(id).size >= lines.length) return this.finalize(id, this.store.hasStatus(id, NOT_RUN) ? 'expired' : 'completed');
    if (this.expired(id)) {
      // OpenAI's expiry: the lines that never ran go to the error file as batch_expired (and count as failed)
      const b = this.get(id);
      const done = this.store.doneLines(id);
      const message = `the batch's ${b.completion_window} completion window ended (expires_at ${b.expires_at}) before this line ran`;
      this.store.tx(() => {
        for (const [i, l] of lines.entries()) {
          if (done.has(i)) continue;
          this.store.putResult(id, { line: i, custom_id: l.custom_id, request_id: requestId(), status_code: NOT_RUN, body: JSON.stringify({ code: 'batch_expired', message }) });
        }
      });
      return this.finalize(id, 'expired');
    }
    // stopped (shutting down) with lines left: the batch stays in_progress and the next process resumes it

  }

  private expired(id: string): boolean {
    return this.opts.expire !== false && now() >= this.get(id).expires_at;
  }

  /** Run the lines without a result, at most window() at once, in input order. */
  private async feed(id: string, b: BatchRow, lines: readonly BatchInputLine[], r: Running): Promise<void> {
    const done = this.store.doneLines(id);
    const todo = lines.map((_, i) => i).filter((i) => !done.has(i));
    let next = 0;
    const retryMs = this.opts.retryMs ?? 200;
    const worker = async (): Promise<void> => {
      while (next < todo.length && !r.ac.signal.aborted && !this.expired(id)) {
        const i = todo[next++]!;
        const line = lines[i]!;
        for (;;) {
          let res: ExecResult;
          try {
            res = await this.exec(line.url, line.body, r.ac.signal);
          } catch (e) {
            if (r.ac.signal.aborted) return;
            res = { status: 500, body: JSON.stringify({ error: { message: (e as Error).message, type: 'server_error', param: null, code: 'internal_error' } }) };
          }
          if (r.ac.signal.aborted) return; // cancelled or stopping: an aborted answer is not the line's result
          const kind = this.classify(res);
          if (kind === 'stop') { r.ac.abort(); return; }
          if (kind === 'retry') { await new Promise((ok) => setTimeout(ok, retryMs)); if (r.ac.signal.aborted) return; continue; }
          const result: LineResult = { line: i, custom_id: line.custom_id, request_id: res.requestId ?? requestId(), status_code: res.status, body: res.body };
          this.store.putResult(id, result);
          this.opts.onLine?.(id, i);
          break;
        }
      }
    };
    const n = Math.max(1, Math.min(this.opts.window(), todo.length));
    await Promise.all(Array.from({ length: n }, worker));
  }

  /** Write the output (2xx) and error (other statuses) files in input order, then flip the status in one transaction. */
  private finalize(id: string, end: Extract<BatchStatus, 'completed' | 'cancelled' | 'expired'>): void {
    if (end === 'completed') this.store.updateBatch(id, { status: 'finalizing', finalizing_at: now() });
    const c = this.store.counts(id);
    // streamed from SQLite, one pass per file: memory stays flat however large the batch
    const lines = (ok: boolean) => (function* (store: Store) {
      for (const res of store.results(id)) if ((res.status_code >= 200 && res.status_code < 300) === ok) yield outputLine(res);
    })(this.store);
    // each file's id follows from the batch's: a finalize cut short after a file's row (kill -9) is redone over that
    // file, never beside it as a second output file of the batch
    const write = (kind: 'output' | 'error', ok: boolean, n: number) => {
      const fileId = `file-${createHash('sha256').update(`${id}:${kind}`).digest('hex').slice(0, 32)}`;
      this.store.deleteFile(fileId);
      return createFile(this.store, 'batch_output', `${id}_${kind}.jsonl`, lines(ok), n, fileId);
    };
    const outFile = c.completed ? write('output', true, c.completed) : null;
    const errFile = c.failed ? write('error', false, c.failed) : null;
    const t = now();
    this.store.updateBatch(id, {
      status: end, output_file_id: outFile?.id ?? null, error_file_id: errFile?.id ?? null,
      ...(end === 'completed' ? { completed_at: t } : end === 'cancelled' ? { cancelled_at: t } : { expired_at: t }),
    });
    this.release(id);
  }

  /** An ended batch's own copy of its input goes (the input file stays until it is deleted). */
  private release(id: string): void {
    rmSync(this.store.batchInputPath(id), { force: true });
  }

  private fail(id: string, code: string, message: string, line: number | null): void {
    this.store.updateBatch(id, { status: 'failed', failed_at: now(), errors: JSON.stringify({ object: 'list', data: [{ code, message, line, param: null }] }) });
    this.release(id);
  }
}
