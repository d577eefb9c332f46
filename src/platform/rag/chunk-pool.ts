// ChunkWorker: extraction and chunking of ingested documents in a worker_thread, so a server's event loop keeps
// answering while large documents are tokenized. Jobs run one at a time in order; errors come back as Errors.

import { extname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import type { DocumentInput, PreparedDocument, PrepareOptions } from './prepare.js';

interface Reply { readonly id: number; readonly docs?: PreparedDocument[]; readonly error?: string; readonly threadId: number }

export class ChunkWorker {
  private worker: Worker | null = null;
  private next = 1;
  private readonly pending = new Map<number, { resolve: (d: PreparedDocument[]) => void; reject: (e: Error) => void }>();
  /** Thread id of the worker that answered last (0 before any job): the work did not run on the caller's thread. */
  lastThreadId = 0;

  /** tokenizerDir: the embedding model's directory; its tokenizer counts tokens as the embedder does (special tokens included). */
  constructor(readonly tokenizerDir: string) {}

  /** Same result as prepareDocuments(docs, o, embedder.countTokens), computed in the worker. */
  prepare = (docs: readonly DocumentInput[], o: PrepareOptions): Promise<PreparedDocument[]> => {
    const w = this.start();
    const id = this.next++;
    return new Promise<PreparedDocument[]>((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      w.ref(); // keep the process alive while a job is out
      w.postMessage({ id, docs: docs.map((d) => ({ source: d.source, content: d.content, kind: d.kind })), options: { chunkTokens: o.chunkTokens, overlap: o.overlap } });
    });
  };

  async close(): Promise<void> {
    const w = this.worker;
    this.worker = null;
    if (w) await w.terminate();
  }

  private start(): Worker {
    if (this.worker) return this.worker;
    const w = this.worker = spawn(this.tokenizerDir);
    w.on('message', (m: Reply) => {
      const p = this.pending.get(m.id);
      if (!p) return;
      this.pending.delete(m.id);
      this.lastThreadId = m.threadId;
      if (this.pending.size === 0) w.unref();
      if (m.error !== undefined) p.reject(new Error(m.error));
      else p.resolve(m.docs!);
    });
    const fail = (e: Error) => {
      if (this.worker === w) this.worker = null; // the next job starts a fresh worker
      for (const p of this.pending.values()) p.reject(new Error(`the chunking worker failed: ${e.message}`));
      this.pending.clear();
    };
    w.on('error', fail);
    w.on('exit', (code) => { if (this.pending.size) fail(new Error(`exited with code ${code}`)); });
    w.unref();
    return w;
  }
}

/**
 * dist/ runs chunk-worker.js; from TS sources (tsx) a bootstrap registers tsx first, as the engine's worker does. No
 * `execArgv`: the worker inherits the process's flags, which Node would otherwise refuse if one is a V8 flag.
 */
function spawn(tokenizerDir: string): Worker {
  const ext = extname(fileURLToPath(import.meta.url));
  const url = new URL(`./chunk-worker${ext}`, import.meta.url);
  const options = { workerData: { tokenizerDir } };
  if (ext === '.js') return new Worker(url, options);
  const tsxApi = import.meta.resolve('tsx/esm/api');
  return new Worker(`import(${JSON.stringify(tsxApi)}).then((m) => { m.register(); return import(${JSON.stringify(url.href)}); })`, { ...options, eval: true });
}
