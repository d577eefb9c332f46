// Durable platform state in one SQLite database under the data directory (better-sqlite3): files, batches and
// per-line batch results. File bytes live beside it in files/, renamed into place before their row is written.

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
    `);
  }

  close(): void {
    this.db.close();
  }

  private nextSeq(table: 'files' | 'batches'): number {
    const r = this.db.prepare(`SELECT COALESCE(MAX(seq), 0) + 1 AS s FROM ${table}`).get() as { s: number };
    return r.s;
  }

  filePath(id: string): string {
    return join(this.filesDir, `${id}.jsonl`);
  }

  insertFile(f: FileRow): void {
    this.db.prepare('INSERT INTO files (id, seq, purpose, filename, bytes, created_at, lines) VALUES (?, ?, ?, ?, ?, ?, ?)')
      .run(f.id, this.nextSeq('files'), f.purpose, f.filename, f.bytes, f.created_at, f.lines);
  }

  getFile(id: string): FileRow | undefined {
    return this.db.prepare('SELECT id, purpose, filename, bytes, created_at, lines FROM files WHERE id = ?').get(id) as FileRow | undefined;
  }

  /** Files newest first, optionally of one purpose, after the file `after` (cursor), at most `limit`. */
  listFiles(purpose: string | null, after: string | null, limit: number): FileRow[] {
    const cursor = after === null ? null : (this.db.prepare('SELECT seq FROM files WHERE id = ?').get(after) as { seq: number } | undefined)?.seq ?? null;
    return this.db.prepare(`SELECT id, purpose, filename, bytes, created_at, lines FROM files
      WHERE (? IS NULL OR purpose = ?) AND (? IS NULL OR seq < ?) ORDER BY seq DESC LIMIT ?`)
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
    const cursor = after === null ? null : (this.db.prepare('SELECT seq FROM batches WHERE id = ?').get(after) as { seq: number } | undefined)?.seq ?? null;
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

  counts(batchId: string): { completed: number; failed: number } {
    const r = this.db.prepare(`SELECT SUM(status_code BETWEEN 200 AND 299) AS ok, SUM(status_code NOT BETWEEN 200 AND 299) AS bad
      FROM batch_lines WHERE batch_id = ?`).get(batchId) as { ok: number | null; bad: number | null };
    return { completed: r.ok ?? 0, failed: r.bad ?? 0 };
  }

  /** Run fn in one transaction. */
  tx<T>(fn: () => T): T {
    return this.db.transaction(fn)();
  }
}
