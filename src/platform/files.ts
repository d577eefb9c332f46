// Files (OpenAI /v1/files): batch and fine-tune input validation (line-precise), atomic writes, the API's file object.

import { randomUUID } from 'node:crypto';
import { closeSync, copyFileSync, fstatSync, fsyncSync, linkSync, mkdirSync, openSync, renameSync, rmSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';
import { fileLines, LineError, stringLines, type TextLine } from '../formats/lines.js';
import { parseJsonlLines, withoutBom } from '../train/data.js';
import type { FileRow, Store } from './store.js';

export const BATCH_ENDPOINTS = ['/v1/chat/completions', '/v1/completions', '/v1/embeddings', '/v1/responses'] as const;
export type BatchEndpoint = typeof BATCH_ENDPOINTS[number];
export const FILE_PURPOSES = ['batch', 'batch_output', 'fine-tune', 'fine-tune-results'] as const;
/** Purposes a client may upload (the others are files floe writes). */
export const UPLOAD_PURPOSES = ['batch', 'fine-tune'] as const;

export interface BatchInputLine {
  readonly custom_id: string;
  readonly method: 'POST';
  readonly url: BatchEndpoint;
  readonly body: Record<string, unknown>;
}

/** A file the client sent that floe refuses; `line` is 1-based where the problem is on one line. */
export class FileValidationError extends Error {
  constructor(message: string, readonly line: number | null, readonly param: string | null) {
    super(message);
  }
}

/**
 * The deepest nesting of arrays and objects a request may send (its body, and the JSON a string field holds: tool-call
 * arguments, guided_json), and so a batch line's body: the schema compiler and the chat template recurse per level, and
 * a few thousand levels overflowed the stack, a 500. Defined here, below serve/, which imports it (validate.ts answers a
 * deeper request 400 too_deeply_nested).
 */
export const MAX_JSON_DEPTH = 128;

/** The path to the first array or object in `v` (at `depth`) nested deeper than MAX_JSON_DEPTH, as 'a[0].b', or null. */
function deepPath(v: unknown, depth: number): string | null {
  if (v === null || typeof v !== 'object') return null;
  if (depth > MAX_JSON_DEPTH) return '';
  for (const [k, x] of Array.isArray(v) ? [...v.entries()] : Object.entries(v)) {
    const p = deepPath(x, depth + 1);
    if (p !== null) return `${typeof k === 'number' ? `[${k}]` : `.${k}`}${p}`;
  }
  return null;
}

/** Parse and check a batch input file: JSONL of {custom_id, method: 'POST', url, body}, custom_ids unique. */
export function parseBatchInput(text: string): BatchInputLine[] {
  return parseBatchLines(stringLines(text));
}

/** parseBatchInput of a file, read line by line (a file past the longest string, ~512 MiB, reads too); fs errors pass as thrown. */
export function parseBatchFile(path: string): BatchInputLine[] {
  return parseBatchLines(fileLines(path));
}

function parseBatchLines(lines: Iterable<TextLine>): BatchInputLine[] {
  const out: BatchInputLine[] = [];
  const seen = new Map<string, number>();
  for (const l of validUtf8(lines)) {
    const n = l.number;
    const raw = n === 1 ? withoutBom(l.text) : l.text;
    if (!l.terminated && raw === '') break; // nothing after the last newline
    const bad = (msg: string, param: string | null = null): never => { throw new FileValidationError(`line ${n}: ${msg}`, n, param); };
    const src = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
    if (src.trim() === '') bad('empty line; every line must be a JSON object {custom_id, method, url, body}');
    let v: unknown;
    try {
      v = JSON.parse(src);
    } catch (e) {
      bad(`not valid JSON (${(e as Error).message})`);
    }
    if (typeof v !== 'object' || v === null || Array.isArray(v)) bad(`expected a JSON object {custom_id, method, url, body}, got ${Array.isArray(v) ? 'an array' : typeof v}`);
    const o = v as Record<string, unknown>;
    if (typeof o.custom_id !== 'string' || o.custom_id.length === 0) bad(`custom_id must be a non-empty string, got ${JSON.stringify(o.custom_id)}`, 'custom_id');
    const prev = seen.get(o.custom_id as string);
    if (prev !== undefined) bad(`custom_id '${o.custom_id}' is already used on line ${prev}; custom_ids must be unique`, 'custom_id');
    seen.set(o.custom_id as string, n);
    if (o.method !== 'POST') bad(`method must be 'POST', got ${JSON.stringify(o.method)}`, 'method');
    if (!(BATCH_ENDPOINTS as readonly unknown[]).includes(o.url)) bad(`url must be one of ${BATCH_ENDPOINTS.join(', ')}, got ${JSON.stringify(o.url)}`, 'url');
    if (typeof o.body !== 'object' || o.body === null || Array.isArray(o.body)) bad('body must be a JSON object (the request body for url)', 'body');
    // the server refuses such a body when the line runs; refused here, the whole file is refused at once
    const deep = deepPath(o.body, 1);
    if (deep !== null) {
      const at = `body${deep}`;
      bad(`'${at.length > 120 ? `${at.slice(0, 120)}…` : at}' nests arrays and objects more than ${MAX_JSON_DEPTH} levels deep (the API refuses such a request: too_deeply_nested); flatten it`, 'body');
    }
    out.push({ custom_id: o.custom_id as string, method: 'POST', url: o.url as BatchEndpoint, body: o.body as Record<string, unknown> });
  }
  if (out.length === 0) throw new FileValidationError('the file has no lines; a batch input needs at least one request', null, null);
  return out;
}

const FINE_TUNE_TAG = 'fine-tune file';

/**
 * Check a fine-tune file as `floe finetune` reads it ({"messages"}, {"prompt","completion"} or {"text"} per line,
 * blank lines skipped); returns the number of examples. Tokenizing waits for the job (the trainer's own check).
 */
export function parseFineTuneInput(text: string): number {
  return fineTuneExamples(stringLines(text));
}

/** parseFineTuneInput of a file, read line by line (a file past the longest string, ~512 MiB, reads too); fs errors pass as thrown. */
export function parseFineTuneFile(path: string): number {
  return fineTuneExamples(fileLines(path, { name: FINE_TUNE_TAG }));
}

function fineTuneExamples(lines: Iterable<TextLine>): number {
  try {
    return parseJsonlLines(lines, FINE_TUNE_TAG).length;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== undefined) throw e; // the file system's (ENOENT: the file was deleted)
    const msg = (e as Error).message;
    const m = new RegExp(`^${FINE_TUNE_TAG}:(\\d+): ([\\s\\S]*)$`).exec(msg);
    if (m) throw new FileValidationError(`line ${m[1]}: ${m[2]}`, Number(m[1]), null);
    throw new FileValidationError(msg.startsWith(`${FINE_TUNE_TAG}: `) ? msg.slice(FINE_TUNE_TAG.length + 2) : msg, null, null);
  }
}

/** The lines, a line that is not UTF-8 refused as a FileValidationError with its number (fileLines throws a LineError). */
function* validUtf8(lines: Iterable<TextLine>): Generator<TextLine, void, undefined> {
  try {
    yield* lines;
  } catch (e) {
    if (e instanceof LineError) throw new FileValidationError(`line ${e.line}: ${e.reason}`, e.line, null);
    throw e;
  }
}

/** Write bytes to path durably: a temporary name, fsync, rename. */
export function writeAtomic(path: string, chunks: Iterable<string | Uint8Array>): number {
  const tmp = `${path}.${process.pid}.tmp`;
  const fd = openSync(tmp, 'w');
  let bytes = 0;
  try {
    let pending = ''; // strings are gathered into ~1 MiB writes
    for (const c of chunks) {
      if (typeof c === 'string') {
        pending += c;
        if (pending.length < 2 ** 20) continue;
        bytes += writeSync(fd, pending);
        pending = '';
      } else {
        if (pending) { bytes += writeSync(fd, pending); pending = ''; }
        bytes += writeSync(fd, c);
      }
    }
    if (pending) bytes += writeSync(fd, pending);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);
  return bytes;
}

/**
 * Give `dst` the bytes of `src`, which may be deleted later (DELETE /v1/files): a hard link (same data dir, no copy),
 * else a copy renamed into place whole. An earlier `dst` is replaced.
 */
export function keepCopy(src: string, dst: string): void {
  mkdirSync(dirname(dst), { recursive: true });
  rmSync(dst, { force: true });
  try {
    linkSync(src, dst);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw e;
    copyFileSync(src, `${dst}.tmp`);
    renameSync(`${dst}.tmp`, dst);
  }
}

export function newFileId(): string {
  return `file-${randomUUID().replaceAll('-', '')}`;
}

/** Store a file: bytes renamed into place first, then its row (a crash in between leaves an orphan, never a half file). */
export function createFile(store: Store, purpose: string, filename: string, chunks: Iterable<string | Uint8Array>, lines: number, id = newFileId()): FileRow {
  const bytes = writeAtomic(store.filePath(id), chunks);
  const row: FileRow = { id, purpose, filename, bytes, created_at: Math.floor(Date.now() / 1000), lines };
  store.insertFile(row);
  return row;
}

/** Store the file written at `tmp` (in the store's file directory) as file `id`: fsynced, renamed into place, recorded. */
export function adoptFile(store: Store, purpose: string, filename: string, tmp: string, lines: number, id = newFileId()): FileRow {
  const fd = openSync(tmp, 'r');
  let bytes: number;
  try {
    fsyncSync(fd);
    bytes = fstatSync(fd).size;
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, store.filePath(id));
  const row: FileRow = { id, purpose, filename, bytes, created_at: Math.floor(Date.now() / 1000), lines };
  store.insertFile(row);
  return row;
}

/** The OpenAI file object. */
export function fileObject(f: FileRow): Record<string, unknown> {
  return { id: f.id, object: 'file', bytes: f.bytes, created_at: f.created_at, filename: f.filename, purpose: f.purpose, status: 'processed', status_details: null, expires_at: null };
}
