// Durable platform state in one SQLite database under the data directory (better-sqlite3): files, batches,
// per-line batch results and fine-tuning jobs (events, per-step metrics, checkpoints). File bytes live beside it in files/, renamed into place before their row is written.

import { mkdirSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';

export interface FileRow {
  readonly id: string;
  readonly purpose: string;
  readonly filename: string;
  readonly bytes: number;
  readonly created_at: number; // unix seconds
  readonly lines: number; // JSONL lines (0 for outputs written by floe before counting)
}

/** Why better-sqlite3's native module does not load here (not built: `npm install --ignore-scripts`, no compiler), or null when it does. */
export function sqliteUnavailable(): string | null {
  try {
    new Database(':memory:').close();
    return null;
  } catch (e) {
    return (e as Error).message.split('\n')[0]!;
  }
}

/** A list's `after` names no row of that list (mistyped, deleted, another job's): paging on from it would restart at the top. */
export class UnknownCursorError extends Error {
  constructor(readonly after: string, what: string) {
    super(`no ${what} with id '${after.slice(0, 200)}' to list after; 'after' must be an id from this list (list again without 'after' to start over)`);
  }
}

export type BatchStatus = 'validating' | 'in_progress' | 'finalizing' | 'completed' | 'failed' | 'cancelling' | 'cancelled' | 'expired';

export interface BatchRow {
  readonly id: string;
  readonly seq: number; // creation order, for cursor pagination
  readonly input_file_id: string;
  readonly endpoint: string;
  readonly completion_window: string;
  readonly metadata: string | null; // JSON object
  readonly status: BatchStatus;
  readonly errors: string | null; // JSON: { object: 'list', data: [{ code, message, line, param }] }
  readonly output_file_id: string | null;
  readonly error_file_id: string | null;
  readonly total: number;
  readonly created_at: number;
  readonly in_progress_at: number | null;
  readonly expires_at: number;
  readonly finalizing_at: number | null;
  readonly completed_at: number | null;
  readonly failed_at: number | null;
  readonly expired_at: number | null;
  readonly cancelling_at: number | null;
  readonly cancelled_at: number | null;
}

export type JobStatus = 'validating_files' | 'queued' | 'running' | 'paused' | 'succeeded' | 'failed' | 'cancelled';

export interface JobRow {
  readonly id: string;
  readonly seq: number; // creation order, for cursor pagination
  readonly model: string; // the served base model's name
  readonly training_file: string;
  readonly validation_file: string | null;
  readonly hyperparameters: string; // JSON: { n_epochs, batch_size, learning_rate_multiplier } as resolved
  readonly options: string; // JSON: floe's trainer options (LoRA rank, alpha, targets, save_steps, ...)
  readonly suffix: string | null;
  readonly seed: number;
  readonly metadata: string | null; // JSON object
  readonly status: JobStatus;
  readonly error: string | null; // JSON: { code, message, param }
  readonly fine_tuned_model: string | null;
  readonly result_files: string; // JSON array of file ids
  readonly trained_tokens: number | null;
  readonly created_at: number;
  readonly started_at: number | null;
  readonly finished_at: number | null;
  readonly attempts: number; // trainer processes started (a restart mid-job adds one)
  readonly child_pid: number | null; // the trainer process of the last attempt
}

export interface JobEventRow {
  readonly id: string;
  readonly job_id: string;
  readonly seq: number;
  readonly created_at: number;
  readonly level: 'info' | 'warn' | 'error';
  readonly message: string;
  readonly type: 'message' | 'metrics';
  readonly data: string | null; // JSON
}

export interface JobStepRow {
  readonly step: number;
  readonly train_loss: number | null;
  readonly valid_loss: number | null;
  readonly total_tokens: number | null;
}

export interface JobCheckpointRow {
  readonly id: string;
  readonly job_id: string;
  readonly step: number;
  readonly created_at: number;
}

export interface LineResult {
  readonly line: number; // 0-based input line
  readonly custom_id: string;
  readonly request_id: string;
  readonly status_code: number;
  readonly body: string; // the endpoint's JSON response
}

export class Store {
  readonly db: Database.Database;
  readonly filesDir: string;

  constructor(readonly dataDir: string) {
    mkdirSync(join(dataDir, 'files'), { recursive: true });
    this.filesDir = join(dataDir, 'files');
    // a crash mid-write leaves only *.tmp files, which no row names
    for (const f of readdirSync(this.filesDir)) if (f.endsWith('.tmp')) rmSync(join(this.filesDir, f), { force: true });
    this.db = new Database(join(dataDir, 'floe.db'));
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('synchronous = FULL'); // a result is on disk once its insert returns
    this.db.exec(`
      CREATE TABLE IF NOT EXISTS files (
        id TEXT PRIMARY KEY, seq INTEGER NOT NULL, purpose TEXT NOT NULL, filename TEXT NOT NULL,
        bytes INTEGER NOT NULL, created_at INTEGER NOT NULL, lines INTEGER NOT NULL);
      CREATE TABLE IF NOT EXISTS batches (
        id TEXT PRIMARY KEY, seq INTEGER NOT NULL, input_file_id TEXT NOT NULL, endpoint TEXT NOT NULL,
        completion_window TEXT NOT NULL, metadata TEXT, status TEXT NOT NULL, errors TEXT,
        output_file_id TEXT, error_file_id TEXT, total INTEGER NOT NULL, created_at INTEGER NOT NULL,
        in_progress_at INTEGER, expires_at INTEGER NOT NULL, finalizing_at INTEGER, completed_at INTEGER,
        failed_at INTEGER, expired_at INTEGER, cancelling_at INTEGER, cancelled_at INTEGER);
      CREATE TABLE IF NOT EXISTS batch_lines (
        batch_id TEXT NOT NULL, line INTEGER NOT NULL, custom_id TEXT NOT NULL, request_id TEXT NOT NULL,
        status_code INTEGER NOT NULL, body TEXT NOT NULL, PRIMARY KEY (batch_id, line));
      CREATE TABLE IF NOT EXISTS ft_jobs (
        id TEXT PRIMARY KEY, seq INTEGER NOT NULL, model TEXT NOT NULL, training_file TEXT NOT NULL, validation_file TEXT,
        hyperparameters TEXT NOT NULL, options TEXT NOT NULL, suffix TEXT, seed INTEGER NOT NULL, metadata TEXT,
        status TEXT NOT NULL, error TEXT, fine_tuned_model TEXT, result_files TEXT NOT NULL, trained_tokens INTEGER,
        created_at INTEGER NOT NULL, started_at INTEGER, finished_at INTEGER, attempts INTEGER NOT NULL, child_pid INTEGER);
      CREATE TABLE IF NOT EXISTS ft_events (
        id TEXT NOT NULL UNIQUE, job_id TEXT NOT NULL, seq INTEGER NOT NULL, created_at INTEGER NOT NULL, level TEXT NOT NULL,
        message TEXT NOT NULL, type TEXT NOT NULL, data TEXT, PRIMARY KEY (job_id, seq));
      CREATE TABLE IF NOT EXISTS ft_steps (
        job_id TEXT NOT NULL, step INTEGER NOT NULL, train_loss REAL, valid_loss REAL, total_tokens INTEGER, PRIMARY KEY (job_id, step));
      CREATE TABLE IF NOT EXISTS ft_checkpoints (
        id TEXT NOT NULL UNIQUE, job_id TEXT NOT NULL, step INTEGER NOT NULL, created_at INTEGER NOT NULL, PRIMARY KEY (job_id, step));
    `);
  }

  close(): void {
    this.db.close();
  }

  private nextSeq(table: 'files' | 'batches' | 'ft_jobs'): number {
    const r = this.db.prepare(`SELECT COALESCE(MAX(seq), 0) + 1 AS s FROM ${table}`).get() as { s: number };
    return r.s;
  }

  filePath(id: string): string {
    return join(this.filesDir, `${id}.jsonl`);
  }

  /** An unfinished batch's own input (keepCopy of its input file), which a DELETE of that file leaves in place. */
  batchInputPath(batchId: string): string {
    return join(this.dataDir, 'batch-inputs', `${batchId}.jsonl`);
  }

  insertFile(f: FileRow): void {
    this.db.prepare('INSERT INTO files (id, seq, purpose, filename, bytes, created_at, lines) VALUES (?, ?, ?, ?, ?, ?, ?)')
      .run(f.id, this.nextSeq('files'), f.purpose, f.filename, f.bytes, f.created_at, f.lines);
  }

  getFile(id: string): FileRow | undefined {
    return this.db.prepare('SELECT id, purpose, filename, bytes, created_at, lines FROM files WHERE id = ?').get(id) as FileRow | undefined;
  }

  /** Files newest first (`order` 'asc': oldest first), optionally of one purpose, after the file `after` (cursor), at most `limit`. */
  listFiles(purpose: string | null, after: string | null, limit: number, order: 'asc' | 'desc' = 'desc'): FileRow[] {
    const cursor = this.cursor('SELECT seq FROM files WHERE id = ?', after, 'file');
    return this.db.prepare(`SELECT id, purpose, filename, bytes, created_at, lines FROM files
      WHERE (? IS NULL OR purpose = ?) AND (? IS NULL OR seq ${order === 'asc' ? '>' : '<'} ?) ORDER BY seq ${order === 'asc' ? 'ASC' : 'DESC'} LIMIT ?`)
      .all(purpose, purpose, cursor, cursor, limit) as FileRow[];
  }

  deleteFile(id: string): boolean {
    const r = this.db.prepare('DELETE FROM files WHERE id = ?').run(id);
    if (r.changes > 0) rmSync(this.filePath(id), { force: true });
    return r.changes > 0;
  }

  insertBatch(b: Omit<BatchRow, 'seq'>): void {
    const cols = Object.keys(b);
    this.db.prepare(`INSERT INTO batches (seq, ${cols.join(', ')}) VALUES (?, ${cols.map(() => '?').join(', ')})`)
      .run(this.nextSeq('batches'), ...cols.map((c) => (b as unknown as Record<string, unknown>)[c]));
  }

  getBatch(id: string): BatchRow | undefined {
    return this.db.prepare('SELECT * FROM batches WHERE id = ?').get(id) as BatchRow | undefined;
  }

  /** Batches newest first after the batch `after` (cursor), at most `limit`. */
  listBatches(after: string | null, limit: number): BatchRow[] {
    const cursor = this.cursor('SELECT seq FROM batches WHERE id = ?', after, 'batch');
    return this.db.prepare('SELECT * FROM batches WHERE (? IS NULL OR seq < ?) ORDER BY seq DESC LIMIT ?').all(cursor, cursor, limit) as BatchRow[];
  }

  /** Batches a restart must pick up again, oldest first. */
  unfinishedBatches(): BatchRow[] {
    return this.db.prepare(`SELECT * FROM batches WHERE status IN ('validating', 'in_progress', 'finalizing', 'cancelling') ORDER BY seq`).all() as BatchRow[];
  }

  updateBatch(id: string, fields: Partial<Omit<BatchRow, 'id' | 'seq'>>): void {
    const cols = Object.keys(fields);
    if (cols.length === 0) return;
    this.db.prepare(`UPDATE batches SET ${cols.map((c) => `${c} = ?`).join(', ')} WHERE id = ?`)
      .run(...cols.map((c) => (fields as Record<string, unknown>)[c]), id);
  }

  /** Record one line's result durably (idempotent: a line already recorded keeps its first result). */
  putResult(batchId: string, r: LineResult): void {
    this.db.prepare('INSERT OR IGNORE INTO batch_lines (batch_id, line, custom_id, request_id, status_code, body) VALUES (?, ?, ?, ?, ?, ?)')
      .run(batchId, r.line, r.custom_id, r.request_id, r.status_code, r.body);
  }

  doneLines(batchId: string): Set<number> {
    const rows = this.db.prepare('SELECT line FROM batch_lines WHERE batch_id = ?').pluck().all(batchId) as number[];
    return new Set(rows);
  }

  /** Results in input order. */
  results(batchId: string): IterableIterator<LineResult> {
    return this.db.prepare('SELECT line, custom_id, request_id, status_code, body FROM batch_lines WHERE batch_id = ? ORDER BY line').iterate(batchId) as IterableIterator<LineResult>;
  }

  /** Whether some line of the batch has this status_code. */
  hasStatus(batchId: string, statusCode: number): boolean {
    return this.db.prepare('SELECT 1 FROM batch_lines WHERE batch_id = ? AND status_code = ? LIMIT 1').get(batchId, statusCode) !== undefined;
  }

  counts(batchId: string): { completed: number; failed: number } {
    const r = this.db.prepare(`SELECT SUM(status_code BETWEEN 200 AND 299) AS ok, SUM(status_code NOT BETWEEN 200 AND 299) AS bad
      FROM batch_lines WHERE batch_id = ?`).get(batchId) as { ok: number | null; bad: number | null };
    return { completed: r.ok ?? 0, failed: r.bad ?? 0 };
  }

  insertJob(j: Omit<JobRow, 'seq'>): void {
    const cols = Object.keys(j);
    this.db.prepare(`INSERT INTO ft_jobs (seq, ${cols.join(', ')}) VALUES (?, ${cols.map(() => '?').join(', ')})`)
      .run(this.nextSeq('ft_jobs'), ...cols.map((c) => (j as unknown as Record<string, unknown>)[c]));
  }

  getJob(id: string): JobRow | undefined {
    return this.db.prepare('SELECT * FROM ft_jobs WHERE id = ?').get(id) as JobRow | undefined;
  }

  /**
   * Jobs newest first after the job `after` (cursor), at most `limit`; with `metadata` only the jobs whose metadata
   * holds every given key with that value (OpenAI's metadata[k]=v filter), with null only the jobs without metadata.
   */
  listJobs(after: string | null, limit: number, metadata?: Readonly<Record<string, string>> | null): JobRow[] {
    const cursor = this.cursor('SELECT seq FROM ft_jobs WHERE id = ?', after, 'fine-tuning job');
    const pairs = metadata ? Object.entries(metadata) : [];
    const where = metadata === null ? ' AND metadata IS NULL'
      : pairs.map(() => " AND EXISTS (SELECT 1 FROM json_each(ft_jobs.metadata) WHERE key = ? AND type = 'text' AND value = ?)").join('');
    return this.db.prepare(`SELECT * FROM ft_jobs WHERE (? IS NULL OR seq < ?)${where} ORDER BY seq DESC LIMIT ?`).all(cursor, cursor, ...pairs.flat(), limit) as JobRow[];
  }

  /** Jobs of the given statuses, oldest first. */
  jobsWith(statuses: readonly JobStatus[]): JobRow[] {
    return this.db.prepare(`SELECT * FROM ft_jobs WHERE status IN (${statuses.map(() => '?').join(', ')}) ORDER BY seq`).all(...statuses) as JobRow[];
  }

  updateJob(id: string, fields: Partial<Omit<JobRow, 'id' | 'seq'>>): void {
    const cols = Object.keys(fields);
    if (cols.length === 0) return;
    this.db.prepare(`UPDATE ft_jobs SET ${cols.map((c) => `${c} = ?`).join(', ')} WHERE id = ?`)
      .run(...cols.map((c) => (fields as Record<string, unknown>)[c]), id);
  }

  addJobEvent(e: Omit<JobEventRow, 'seq'>): void {
    this.db.prepare(`INSERT INTO ft_events (id, job_id, seq, created_at, level, message, type, data)
      VALUES (?, ?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM ft_events WHERE job_id = ?), ?, ?, ?, ?, ?)`)
      .run(e.id, e.job_id, e.job_id, e.created_at, e.level, e.message, e.type, e.data);
  }

  /** A job's events newest first (OpenAI's order), after the event `after` (cursor), at most `limit`. */
  jobEvents(jobId: string, after: string | null, limit: number): JobEventRow[] {
    const cursor = this.cursor('SELECT seq FROM ft_events WHERE id = ? AND job_id = ?', after, `event of ${jobId}`, jobId);
    return this.db.prepare('SELECT * FROM ft_events WHERE job_id = ? AND (? IS NULL OR seq < ?) ORDER BY seq DESC LIMIT ?').all(jobId, cursor, cursor, limit) as JobEventRow[];
  }

  /** Record a training step's loss (a step redone after a resume keeps its first record) or an eval's. */
  putJobStep(jobId: string, step: number, f: { train_loss?: number; valid_loss?: number; total_tokens?: number }): boolean {
    const r = this.db.prepare('INSERT OR IGNORE INTO ft_steps (job_id, step, train_loss, valid_loss, total_tokens) VALUES (?, ?, ?, ?, ?)')
      .run(jobId, step, f.train_loss ?? null, f.valid_loss ?? null, f.total_tokens ?? null);
    if (r.changes > 0) return true;
    if (f.valid_loss !== undefined) this.db.prepare('UPDATE ft_steps SET valid_loss = ? WHERE job_id = ? AND step = ?').run(f.valid_loss, jobId, step);
    if (f.train_loss !== undefined) this.db.prepare('UPDATE ft_steps SET train_loss = COALESCE(train_loss, ?), total_tokens = COALESCE(total_tokens, ?) WHERE job_id = ? AND step = ?')
      .run(f.train_loss, f.total_tokens ?? null, jobId, step);
    return false;
  }

  jobSteps(jobId: string): JobStepRow[] {
    return this.db.prepare('SELECT step, train_loss, valid_loss, total_tokens FROM ft_steps WHERE job_id = ? ORDER BY step').all(jobId) as JobStepRow[];
  }

  jobStep(jobId: string, step: number): JobStepRow | undefined {
    return this.db.prepare('SELECT step, train_loss, valid_loss, total_tokens FROM ft_steps WHERE job_id = ? AND step = ?').get(jobId, step) as JobStepRow | undefined;
  }

  /** Record a checkpoint once; false when it was already recorded. */
  putJobCheckpoint(c: JobCheckpointRow): boolean {
    return this.db.prepare('INSERT OR IGNORE INTO ft_checkpoints (id, job_id, step, created_at) VALUES (?, ?, ?, ?)').run(c.id, c.job_id, c.step, c.created_at).changes > 0;
  }

  /** A job's checkpoints newest first, after the checkpoint `after` (cursor), at most `limit`. */
  jobCheckpoints(jobId: string, after: string | null, limit: number): JobCheckpointRow[] {
    const cursor = this.cursor('SELECT step FROM ft_checkpoints WHERE id = ? AND job_id = ?', after, `checkpoint of ${jobId}`, jobId);
    return this.db.prepare('SELECT * FROM ft_checkpoints WHERE job_id = ? AND (? IS NULL OR step < ?) ORDER BY step DESC LIMIT ?').all(jobId, cursor, cursor, limit) as JobCheckpointRow[];
  }

  /** The position (seq or step) of the row `after` names; a cursor that names no row is refused, never read as the start. */
  private cursor(sql: string, after: string | null, what: string, ...scope: string[]): number | null {
    if (after === null) return null;
    const at = this.db.prepare(sql).pluck().get(after, ...scope) as number | undefined;
    if (at === undefined) throw new UnknownCursorError(after, what);
    return at;
  }

  /** Run fn in one transaction. */
  tx<T>(fn: () => T): T {
    return this.db.transaction(fn)();
  }
}
