// OpenAI fine-tuning routes (/v1/fine_tuning/jobs...): the JobService on the Batch API's store; a succeeded job's
// adapter is served through the engine's runtime adapter load, and served again at every start (before ready). A job
// whose LoRA rank is above this start's --max-lora-rank is not served: its models are a 400 saying so, as vLLM refuses
// an adapter above max_lora_rank (a 404 would say the model does not exist).

import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { FastifyInstance, FastifyReply } from 'fastify';
import { EngineRequestError, type EngineClient } from '../engine/protocol.js';
import { JobApiError, JobService } from '../platform/jobs/service.js';
import { UnknownCursorError, type JobRow, type Store } from '../platform/store.js';
import { ApiError } from './errors.js';
import { queryOnce } from './paging.js';
import type { LoadDType } from '../formats/load.js';

export interface FtRoutesOptions {
  readonly dataDir: string;
  readonly store: () => Store; // the Files / Batch store (opened on first use)
  readonly baseModel: string; // the served model's name
  readonly modelPath: string | null; // its weights; null → jobs are refused
  readonly threads: number; // --jobs-threads
  readonly dtype?: LoadDType; // the server's --dtype: jobs train on the base converted the same way
  readonly maxLoraRank?: number; // --max-lora-rank: jobs of a higher rank are refused
  readonly engine: () => EngineClient | null; // null while loading
}

export const DEFAULT_JOBS_THREADS = 1;

export interface FtRoutes {
  readonly service: () => JobService;
  readonly restore: (engine: EngineClient) => Promise<void>;
  /**
   * A request's model that names a job checkpoint (`…:ckpt-step-N`), or a job's fine-tuned model that is not served
   * (its load at start failed), is loaded on first use; a job above --max-lora-rank is a 400; other names pass.
   */
  readonly serveJobModel: (model: unknown, engine: EngineClient) => Promise<void>;
}

export function registerFtRoutes(app: FastifyInstance, o: FtRoutesOptions): FtRoutes {
  let svc: JobService | null = null;
  let closed = false;
  let restored: Promise<void> | null = null;
  const load = async (e: EngineClient, name: string, dir: string) => {
    if (!e.loadAdapter) throw new Error('this engine cannot load LoRA adapters');
    await e.loadAdapter(name, dir);
  };
  /** Why the models of job `j` (`name` one of them) are not served here, or null: a rank above --max-lora-rank. */
  const rankRefusal = (j: JobRow, name: string): ApiError | null => {
    const problem = service().rankProblem(j, name); // one wording for the 400, the start's log line and the job's event
    return problem ? new ApiError(400, problem, 'model', 'lora_rank_exceeded') : null;
  };
  /** A succeeded job's adapter, at start: refused with the rank problem before the engine reads it. */
  const loadJobModel = async (e: EngineClient, name: string, dir: string) => {
    const j = service().jobOfModel(name);
    const refusal = j && rankRefusal(j, name);
    if (refusal) throw new Error(refusal.message);
    await load(e, name, dir);
  };
  const service = (): JobService => {
    if (svc) return svc;
    if (!o.modelPath) throw new JobApiError(400, 'this server has no model path to train from, so fine-tuning jobs are off', null, 'fine_tuning_unavailable');
    const s = new JobService(o.store(), {
      baseModel: o.baseModel, modelPath: o.modelPath, threads: o.threads, dtype: o.dtype, maxLoraRank: o.maxLoraRank,
      register: async (name, dir) => load(await engineReady(), name, dir),
    });
    svc = s;
    void s.start();
    // an app whose host never called restore (tests building the app by hand): serve them once the engine is up
    void engineReady().then((e) => restored ?? s.registerAll((name, dir) => loadJobModel(e, name, dir)), () => {});
    return s;
  };
  /** Serve every succeeded job's adapter on `engine` (the server calls it before it reports ready). */
  const restore = (engine: EngineClient): Promise<void> => {
    if (!existsSync(join(o.dataDir, 'floe.db')) || !o.modelPath) return Promise.resolve();
    restored ??= service().registerAll((name, dir) => loadJobModel(engine, name, dir));
    return restored;
  };
  /** The engine once the model is loaded (a job may finish while it loads). */
  const engineReady = async (): Promise<EngineClient> => {
    for (;;) {
      const e = o.engine();
      if (e) return e;
      if (closed) throw new Error('the server is shutting down');
      await new Promise((r) => setTimeout(r, 100));
    }
  };
  const loading = new Map<string, Promise<void>>(); // one load per model name, however many requests name it
  const serveJobModel = async (model: unknown, engine: EngineClient): Promise<void> => {
    if (typeof model !== 'string' || !model.startsWith('ft:') || !o.modelPath || !existsSync(join(o.dataDir, 'floe.db'))) return;
    if (engine.adapters?.().some((a) => a.name === model)) return;
    let p = loading.get(model);
    if (!p) {
      p = (async () => {
        const s = service();
        const ckDir = s.checkpointDir(model); // a checkpoint of no job, or not on disk: a 404 naming why
        const ck = /:(ftjob-[0-9a-f]+):ckpt-step-\d+$/.exec(model);
        const j = ckDir !== null && ck ? s.store.getJob(ck[1]!) : s.jobOfModel(model);
        if (!j || (ckDir === null && s.modelDeleted(j))) return; // no job's model (or a deleted one): the route's 404
        const refusal = rankRefusal(j, model);
        if (refusal) throw refusal;
        await load(engine, model, ckDir ?? s.adapterDir(j.id));
      })().finally(() => loading.delete(model));
      loading.set(model, p);
    }
    try {
      await p;
    } catch (e) {
      if (e instanceof ApiError) throw e;
      if (e instanceof JobApiError) throw new ApiError(e.status === 404 ? 404 : 400, e.message, e.param, e.code);
      throw new ApiError(400, `cannot serve the model '${model}': ${(e as Error).message}`, 'model', /:ckpt-step-\d+$/.test(model) ? 'checkpoint_unavailable' : 'model_unavailable');
    }
  };
  // Resume at start when a previous process left state behind.
  app.addHook('onReady', async () => { if (existsSync(join(o.dataDir, 'floe.db'))) try { service(); } catch { /* no model path: nothing to resume */ } });
  app.addHook('preClose', async () => { closed = true; if (svc) await svc.close(); });

  const send = (reply: FastifyReply, e: JobApiError) =>
    reply.code(e.status).send({ error: { message: e.message, type: 'invalid_request_error', param: e.param, code: e.code } });
  const limitOf = (q: { limit?: string }): number => {
    const n = q.limit === undefined ? 20 : Number(q.limit);
    if (!(Number.isInteger(n) && n >= 1 && n <= 1000)) throw new JobApiError(400, `limit must be an integer in [1, 1000], got '${q.limit}'`, 'limit', 'invalid_value');
    return n;
  };
  type Page = { Params: { id: string }; Querystring: { after?: string; limit?: string } };

  void app.register(async (sub) => {
    sub.setErrorHandler((err, _req, reply) => {
      if (err instanceof JobApiError) return send(reply, err);
      if (err instanceof UnknownCursorError) return send(reply, new JobApiError(404, err.message, 'after', 'not_found'));
      throw err; // the app's handler (auth, loading, 400 bodies)
    });

    sub.post('/v1/fine_tuning/jobs', async (req) => {
      const body = req.body;
      if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new JobApiError(400, 'the body must be a JSON object', null, 'invalid_value');
      const s = service();
      return s.object(s.create(body as Record<string, unknown>));
    });
    sub.get<{ Querystring: Record<string, string | string[] | undefined> }>('/v1/fine_tuning/jobs', async (req) => {
      const s = service();
      const q = queryOnce(req.query, ['after', 'limit']);
      const limit = limitOf(q);
      const rows = s.store.listJobs(q.after ?? null, limit + 1, metadataFilter(req.query));
      return { object: 'list', data: rows.slice(0, limit).map((j) => s.object(j)), has_more: rows.length > limit };
    });
    sub.get<{ Params: { id: string } }>('/v1/fine_tuning/jobs/:id', async (req) => service().object(service().get(req.params.id)));
    sub.post<{ Params: { id: string } }>('/v1/fine_tuning/jobs/:id/cancel', async (req) => service().object(await service().cancel(req.params.id)));
    sub.post<{ Params: { id: string } }>('/v1/fine_tuning/jobs/:id/pause', async (req) => service().object(await service().pause(req.params.id)));
    sub.post<{ Params: { id: string } }>('/v1/fine_tuning/jobs/:id/resume', async (req) => service().object(service().resume(req.params.id)));
    // OpenAI's DELETE /v1/models/{model}: a fine-tuned model of a job; the base and the LoRA adapters are not deleted here
    sub.delete<{ Params: { id: string } }>('/v1/models/:id', async (req) => {
      const name = req.params.id;
      const s = service();
      const j = s.jobOfModel(name);
      if (j && !s.modelDeleted(j)) {
        await s.deleteModel(j, async (n) => {
          const e = o.engine();
          try {
            await e?.unloadAdapter?.(n);
          } catch (err) {
            if (!(err instanceof EngineRequestError && err.status === 404)) throw err; // not served (it failed to load at start)
          }
        });
        return { id: name, object: 'model', deleted: true };
      }
      if (j) throw new JobApiError(404, `the model '${name.slice(0, 200)}' was deleted`, 'model', 'model_not_found');
      if (name === o.baseModel || o.engine()?.adapters?.().some((a) => a.name === name)) {
        throw new JobApiError(400, `'${name.slice(0, 200)}' is not the fine-tuned model of a job: DELETE /v1/models deletes only those (a LoRA adapter is unloaded with POST /v1/unload_lora_adapter)`, 'model', 'invalid_value');
      }
      throw new JobApiError(404, `the model '${name.slice(0, 200)}' does not exist`, 'model', 'model_not_found');
    });
    sub.get<Page>('/v1/fine_tuning/jobs/:id/events', async (req) => {
      const s = service();
      const j = s.get(req.params.id);
      const q = queryOnce(req.query, ['after', 'limit']);
      const limit = limitOf(q);
      const rows = s.store.jobEvents(j.id, q.after ?? null, limit + 1);
      return { object: 'list', data: rows.slice(0, limit).map((e) => s.eventObject(e)), has_more: rows.length > limit };
    });
    sub.get<Page>('/v1/fine_tuning/jobs/:id/checkpoints', async (req) => {
      const s = service();
      const j = s.get(req.params.id);
      const q = queryOnce(req.query, ['after', 'limit']);
      const limit = limitOf(q);
      const rows = s.store.jobCheckpoints(j.id, q.after ?? null, limit + 1);
      const data = rows.slice(0, limit).map((c) => s.checkpointObject(j, c));
      return { object: 'list', data, first_id: data[0]?.id ?? null, last_id: data.at(-1)?.id ?? null, has_more: rows.length > limit };
    });
  });
  return { service, restore, serveJobModel };
}

/**
 * OpenAI's job-list filter: `metadata[k]=v` (each pair must match) or `metadata=null` (jobs without metadata);
 * undefined when the query has none. Anything else spelled `metadata…` is a 400, never ignored.
 */
export function metadataFilter(query: Record<string, string | string[] | undefined>): Record<string, string> | null | undefined {
  let none = false;
  const pairs: Record<string, string> = {};
  for (const [key, v] of Object.entries(query)) {
    if (!key.startsWith('metadata')) continue;
    const k = key.slice(0, 100);
    if (typeof v !== 'string') throw new JobApiError(400, `${k} is given more than once; give it one value`, k, 'invalid_value');
    if (key === 'metadata' && (v === 'null' || v === '')) { none = true; continue; } // the openai client sends metadata: null as 'metadata='
    const m = /^metadata\[([^\]]+)\]$/.exec(key);
    if (!m) throw new JobApiError(400, `unknown query parameter '${k}': filter jobs by metadata with metadata[KEY]=VALUE, or metadata=null for jobs without metadata`, k, 'invalid_value');
    pairs[m[1]!] = v;
  }
  const given = Object.keys(pairs).length > 0;
  if (none && given) throw new JobApiError(400, 'metadata=null (jobs without metadata) cannot be combined with metadata[KEY]=VALUE', 'metadata', 'invalid_value');
  return none ? null : given ? pairs : undefined;
}
