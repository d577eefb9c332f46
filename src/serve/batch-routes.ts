// OpenAI Files and Batch routes: state in SQLite under the data directory (opened on first use, or at start when it
// exists so unfinished batches resume); batch lines run through the app's own routes at low priority.

import { randomUUID } from 'node:crypto';
import { createReadStream, createWriteStream, existsSync, rmSync, statSync, type WriteStream } from 'node:fs';
import { once } from 'node:events';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import multipart from '@fastify/multipart';
import type { FastifyInstance, FastifyReply } from 'fastify';
import { Counter } from 'prom-client';
import { BatchApiError, BatchService, type Executor } from '../platform/batch.js';
import { FILE_PURPOSES, FileValidationError, UPLOAD_PURPOSES, adoptFile, fileObject, newFileId, parseBatchFile, parseFineTuneFile } from '../platform/files.js';
import { Store, UnknownCursorError } from '../platform/store.js';
import type { ServeMetrics } from './metrics.js';
import { ApiError } from './errors.js';
import { multipartError } from './multipart.js';
import { queryOnce } from './paging.js';

export interface BatchRoutesOptions {
  readonly dataDir: string;
  readonly apiKey: string | null;
  readonly metrics: ServeMetrics;
  readonly window: () => number; // batch lines in flight at once
  readonly maxFileBytes?: number; // a 'batch' input file: default 200 MiB (OpenAI's limit for batch input)
  readonly maxFineTuneFileBytes?: number; // a 'fine-tune' file: default 512 MiB (OpenAI's limit for a file)
}

/** POST /v1/batches's parameters (OpenAI's, but output_expires_after). */
const BATCH_FIELDS = ['input_file_id', 'endpoint', 'completion_window', 'metadata'];

/** The header that puts a request in the engine's low-priority (batch) lane. */
export const PRIORITY_HEADER = 'x-floe-priority';

/** The header naming an injected batch line, so that registerLineAborts finds its abort signal. */
const LINE_HEADER = 'x-floe-batch-line';
/** Injected batch lines in flight: LINE_HEADER's token → the line's abort signal. */
const lineSignals = new Map<string, AbortSignal>();

/**
 * A batch line aborted (cancel, shutdown) closes its injected reply, which every route takes for a client that left:
 * generation stops. app.inject's own `signal` cannot do it: light-my-request ignores it once the body is read, and the
 * line ran to its last token (a cancel waited for every line in flight to finish). Registered by createApp, before ready.
 */
export function registerLineAborts(app: FastifyInstance): void {
  app.addHook('onRequest', async (req, reply) => {
    const token = req.headers[LINE_HEADER];
    const signal = typeof token === 'string' ? lineSignals.get(token) : undefined;
    if (!signal) return;
    const leave = () => reply.raw.destroy();
    if (signal.aborted) return leave();
    signal.addEventListener('abort', leave, { once: true });
    reply.raw.once('close', () => signal.removeEventListener('abort', leave));
  });
}

/** Lines run through app.inject, so a batch answer is exactly what the route answers a client. */
export function injectExecutor(app: FastifyInstance, apiKey: string | null): Executor {
  return async (url, body, signal) => {
    const token = randomUUID();
    const payload = 'stream' in body ? { ...body, stream: false } : body; // one JSON answer per line
    // a streamed line's stream_options are for a stream it no longer is: left in, they were a 400 ('only allowed when stream is true')
    if (body.stream === true) delete payload.stream_options;
    lineSignals.set(token, signal);
    let stop = () => {};
    try {
      const injected = app.inject({
        method: 'POST', url, payload, signal,
        headers: { 'content-type': 'application/json', [PRIORITY_HEADER]: 'batch', [LINE_HEADER]: token, ...(apiKey ? { authorization: `Bearer ${apiKey}` } : {}) },
      });
      injected.catch(() => {}); // after an abort the race below has settled: a late failure of the closed reply is no one's
      const res = await Promise.race([
        injected,
        // an aborted line's reply was closed: what the route still sends to it is no answer
        new Promise<never>((_, reject) => {
          stop = () => reject(new Error('the batch line was aborted'));
          if (signal.aborted) stop();
          else signal.addEventListener('abort', stop, { once: true });
        }),
      ]);
      const id = res.headers['x-request-id'];
      return { status: res.statusCode, body: res.body, requestId: typeof id === 'string' ? id : undefined }; // the line's request_id: the answer's own
    } finally {
      signal.removeEventListener('abort', stop);
      lineSignals.delete(token);
    }
  };
}

export function registerBatchRoutes(app: FastifyInstance, opts: BatchRoutesOptions): { service: () => BatchService } {
  const lines = new Counter({ name: 'floe_batch_lines_total', help: 'Batch lines executed (whatever their status)', registers: [opts.metrics.registry] });
  const exec = injectExecutor(app, opts.apiKey);
  let svc: BatchService | null = null;
  const service = (): BatchService => {
    if (!svc) {
      svc = new BatchService(new Store(opts.dataDir), exec, { window: opts.window, onLine: () => lines.inc() });
      svc.resume();
    }
    return svc;
  };
  // Resume at start when a previous process left state behind.
  app.addHook('onReady', async () => { if (existsSync(join(opts.dataDir, 'floe.db'))) service(); });
  app.addHook('preClose', async () => { if (svc) await svc.close(); });
  app.addHook('onClose', async () => { svc?.store.close(); });

  const maxBytes: Record<string, number> = { batch: opts.maxFileBytes ?? 200 * 2 ** 20, 'fine-tune': opts.maxFineTuneFileBytes ?? 512 * 2 ** 20 };
  const maxFileBytes = Math.max(...Object.values(maxBytes));
  const mib = (n: number) => (n >= 2 ** 20 ? `${+(n / 2 ** 20).toFixed(1)} MiB` : `${n} bytes`);
  const send = (reply: FastifyReply, status: number, message: string, param: string | null, code: string | null) =>
    reply.code(status).send({ error: { message, type: status >= 500 ? 'server_error' : 'invalid_request_error', param, code } });
  // OpenAI's defaults: a file list is one page of up to 10,000 (client.files.list().data holds every file), other lists 20
  const limitOf = (q: { limit?: string }, byDefault = 20): number => {
    const n = q.limit === undefined ? byDefault : Number(q.limit);
    if (!(Number.isInteger(n) && n >= 1 && n <= 10000)) throw new BatchApiError(400, `limit must be an integer in [1, 10000], got '${q.limit}'`, 'limit');
    return n;
  };

  void app.register(async (sub) => {
    await sub.register(multipart, { limits: { fileSize: maxFileBytes, files: 1 } });
    sub.setErrorHandler((err, _req, reply) => {
      if (err instanceof BatchApiError) return send(reply, err.status, err.message, err.param, err.status === 404 ? 'not_found' : 'invalid_value');
      if (err instanceof FileValidationError) return send(reply, 400, err.message, err.param ?? 'file', 'invalid_file');
      if (err instanceof UnknownCursorError) return send(reply, 404, err.message, 'after', 'not_found');
      throw err; // the app's handler (auth, loading, 413)
    });

    sub.post('/v1/files', async (req, reply) => {
      if (!req.isMultipart()) return send(reply, 415, 'POST /v1/files takes multipart/form-data with the fields purpose and file', null, 'unsupported_media_type');
      let purpose: string | null = null;
      let filename = 'upload.jsonl';
      // the upload goes to disk as it arrives (not into memory: a fine-tune file may be 512 MiB) and is checked there,
      // line by line; it becomes the stored file by a rename, or is removed
      const store = service().store;
      const id = newFileId();
      const tmp = `${store.filePath(id)}.upload-${process.pid}.tmp`;
      let got = false;
      let out: WriteStream | null = null;
      try {
        try {
          for await (const part of req.parts()) {
            if (part.type === 'file') {
              if (part.fieldname !== 'file') return send(reply, 400, `unexpected file field '${part.fieldname}'; send the file as 'file'`, part.fieldname, 'invalid_value');
              filename = part.filename || filename;
              out = createWriteStream(tmp);
              await pipeline(part.file, out); // rejects with 413 past the largest limit
              got = true;
            } else if (part.fieldname === 'purpose') {
              purpose = String(part.value);
            } else if (/^expires_after(\[|$)/.test(part.fieldname)) {
              // the client sends expires_after: {anchor, seconds} as expires_after[anchor], expires_after[seconds]
              return send(reply, 400, "'expires_after' is not supported: files here are kept until deleted (DELETE /v1/files/{file_id}); leave it out", 'expires_after', 'unsupported_parameter');
            } else {
              return send(reply, 400, `unrecognized request argument '${part.fieldname.slice(0, 100)}'; POST /v1/files takes the fields purpose and file`, part.fieldname.slice(0, 100), 'unknown_parameter');
            }
          }
        } catch (e) {
          throw multipartError(e, 'file', () => new ApiError(413, `${filename} is larger than the ${mib(maxFileBytes)} an upload may be`, 'file', 'file_too_large'));
        }
        if (!(UPLOAD_PURPOSES as readonly (string | null)[]).includes(purpose)) return send(reply, 400, `purpose must be one of ${UPLOAD_PURPOSES.map((p) => `'${p}'`).join(', ')}, got ${JSON.stringify(purpose)}`, 'purpose', 'invalid_value');
        if (!got) return send(reply, 400, "no file part: send the JSONL as the multipart field 'file'", 'file', 'invalid_value');
        const bytes = statSync(tmp).size;
        if (bytes > maxBytes[purpose!]!) {
          return send(reply, 413, `${filename} is ${mib(bytes)}; a '${purpose}' file may be at most ${mib(maxBytes[purpose!]!)}`, 'file', 'file_too_large');
        }
        const lines = purpose === 'fine-tune' ? parseFineTuneFile(tmp) : parseBatchFile(tmp).length;
        return fileObject(adoptFile(store, purpose!, filename, tmp, lines, id));
      } finally {
        // a body cut short fails the pipeline before the stream has opened tmp: its late open would create the file
        // after this removal and leave it behind, so wait for the stream to close first
        if (out !== null && !out.closed) await once(out, 'close').catch(() => {});
        rmSync(tmp, { force: true }); // a refused or broken upload (a stored one was renamed away)
      }
    });

    sub.get<{ Querystring: { purpose?: string; after?: string; limit?: string; order?: string } }>('/v1/files', async (req) => {
      const q = queryOnce(req.query, ['purpose', 'after', 'limit', 'order']);
      if (q.purpose !== undefined && !(FILE_PURPOSES as readonly string[]).includes(q.purpose)) throw new BatchApiError(400, `purpose must be one of ${FILE_PURPOSES.join(', ')}, got '${q.purpose}'`, 'purpose');
      const limit = limitOf(q, 10000);
      const order = q.order ?? 'desc';
      if (order !== 'asc' && order !== 'desc') throw new BatchApiError(400, `order must be 'asc' or 'desc', got '${order}'`, 'order');
      const rows = service().store.listFiles(q.purpose ?? null, q.after ?? null, limit + 1, order);
      const data = rows.slice(0, limit).map(fileObject);
      return { object: 'list', data, first_id: data[0]?.id ?? null, last_id: data.at(-1)?.id ?? null, has_more: rows.length > limit };
    });

    const file = (id: string) => {
      const f = service().store.getFile(id);
      if (!f) throw new BatchApiError(404, `no file with id '${id}'`, 'file_id');
      return f;
    };
    sub.get<{ Params: { id: string } }>('/v1/files/:id', async (req) => fileObject(file(req.params.id)));
    sub.get<{ Params: { id: string } }>('/v1/files/:id/content', async (req, reply) => {
      const f = file(req.params.id);
      return reply.header('content-type', f.purpose === 'fine-tune-results' ? 'text/csv' : 'application/jsonl').send(createReadStream(service().store.filePath(f.id)));
    });
    sub.delete<{ Params: { id: string } }>('/v1/files/:id', async (req) => {
      const f = file(req.params.id);
      service().store.deleteFile(f.id);
      return { id: f.id, object: 'file', deleted: true };
    });

    sub.post('/v1/batches', async (req) => {
      const body = (req.body ?? {}) as Record<string, unknown>;
      if (typeof body !== 'object' || Array.isArray(body)) throw new BatchApiError(400, 'the body must be a JSON object');
      // a misspelt parameter (completion_windwo) was dropped without a word, as fine-tuning jobs and OpenAI refuse it
      for (const k of Object.keys(body)) {
        if (k === 'output_expires_after') throw new BatchApiError(400, `'output_expires_after' is not supported: output files are kept until they are deleted (their expires_at is null)`, k);
        if (!BATCH_FIELDS.includes(k)) throw new BatchApiError(400, `unknown parameter '${k.slice(0, 100)}'; a batch takes ${BATCH_FIELDS.join(', ')}`, k.slice(0, 100));
      }
      const s = service();
      return s.object(s.create(body));
    });
    sub.get<{ Querystring: { after?: string; limit?: string } }>('/v1/batches', async (req) => {
      const s = service();
      const q = queryOnce(req.query, ['after', 'limit']);
      const limit = limitOf(q);
      const rows = s.store.listBatches(q.after ?? null, limit + 1);
      const data = rows.slice(0, limit).map((b) => s.object(b));
      return { object: 'list', data, first_id: data[0]?.id ?? null, last_id: data.at(-1)?.id ?? null, has_more: rows.length > limit };
    });
    sub.get<{ Params: { id: string } }>('/v1/batches/:id', async (req) => service().object(service().get(req.params.id)));
    sub.post<{ Params: { id: string } }>('/v1/batches/:id/cancel', async (req) => service().object(service().cancel(req.params.id)));
  });
  return { service };
}
