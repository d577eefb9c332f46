// Stored Responses API responses (store: true): the response object, its input items and the conversation it
// continued, in the data dir's SQLite database beside files, batches and jobs.

import type Database from 'better-sqlite3';

export interface StoredResponse {
  readonly id: string;
  readonly response: Record<string, unknown>; // the response object as returned
  readonly input: Array<Record<string, unknown>>; // this request's input items
  readonly history: Array<Record<string, unknown>>; // the whole conversation before the output (previous responses' too)
}

export class ResponseStore {
  constructor(private readonly db: Database.Database) {
    db.exec(`CREATE TABLE IF NOT EXISTS responses (
      id TEXT PRIMARY KEY, created_at INTEGER NOT NULL, response TEXT NOT NULL, input TEXT NOT NULL, history TEXT NOT NULL)`);
  }

  put(r: StoredResponse): void {
    this.db.prepare('INSERT OR REPLACE INTO responses (id, created_at, response, input, history) VALUES (?, ?, ?, ?, ?)')
      .run(r.id, r.response.created_at as number, JSON.stringify(r.response), JSON.stringify(r.input), JSON.stringify(r.history));
  }

  get(id: string): StoredResponse | undefined {
    const row = this.db.prepare('SELECT id, response, input, history FROM responses WHERE id = ?').get(id) as
      { id: string; response: string; input: string; history: string } | undefined;
    return row && { id: row.id, response: JSON.parse(row.response), input: JSON.parse(row.input), history: JSON.parse(row.history) };
  }

  delete(id: string): boolean {
    return this.db.prepare('DELETE FROM responses WHERE id = ?').run(id).changes > 0;
  }
}
