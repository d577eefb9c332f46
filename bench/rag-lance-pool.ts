// Reproduces the Lance CPU-pool deadlock that floe's RAG store avoids (src/platform/rag/store.ts sets
// LANCE_CPU_THREADS to at least 4): batches of 48 synthetic Brown documents (~300 chunks of ≤ 256 tokens) ingested
// one after another with stand-in random unit vectors (no model: the BM25 index is what stalls), printing each
// batch's time and every LanceDB call pending for 30 s. With LANCE_CPU_THREADS=1 (and with Lance's own default on a
// 2-core host) the table.optimize() after ~14,000-15,000 chunks never returns (0% CPU, every thread parked); with the
// store's default (at least 4) or 2 the run completes.
// Usage: [LANCE_CPU_THREADS=1] node --import tsx bench/rag-lance-pool.ts [--batches 60]
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { RagStore } from '../src/platform/rag/store.js';
import { loadBrown } from '../src/train/corpus.js';
import { Rng } from '../src/train/rng.js';

const { values: v } = parseArgs({ options: { batches: { type: 'string' } } });
const D = 256;
const r = new Rng(1);
const paras = loadBrown().flatMap((d) => d.paragraphs).filter((p) => p.length > 0);
const doc = () => Array.from({ length: 12 + r.int(19) }, () => { const p = paras[r.int(paras.length)]!, k = r.int(p.length); return [...p.slice(k), ...p.slice(0, k)].join(' '); }).join('\n\n');
const unit = () => { const x = Float32Array.from({ length: D }, () => r.next() - 0.5); const n = Math.hypot(...x); return x.map((y) => y / n); };
const emb = { name: 'random', dim: D, maxTokens: 256, countTokens: (t: string) => t.split(' ').length, embed: (ts: readonly string[]) => ts.map(unit) };

const dir = mkdtempSync(join(tmpdir(), 'floe-lance-pool-'));
process.stdout.write(`LANCE_CPU_THREADS=${process.env.LANCE_CPU_THREADS}\n`);
try {
  const store = await RagStore.open(join(dir, 'db'), { create: true });
  const col = await store.create('pool', emb);
  const table = col.table as unknown as Record<string, (...a: unknown[]) => unknown>;
  for (const m of ['mergeInsert', 'optimize', 'createIndex']) { // log each call that stays pending
    const f = table[m]!.bind(table);
    table[m] = (...a: unknown[]) => {
      const out = f(...a);
      if (out instanceof Promise) { const t = setTimeout(() => process.stdout.write(`  ${m}() pending for 30 s\n`), 30_000); out.finally(() => clearTimeout(t)).catch(() => {}); }
      return out;
    };
  }
  let chunks = 0;
  for (let b = 0; b < Number(v.batches ?? 60); b++) {
    const t = performance.now();
    const res = await col.ingest(Array.from({ length: 48 }, (_, i) => ({ source: `d${b}-${i}`, content: doc(), kind: 'doc.txt' })), emb, { chunkTokens: 256 });
    chunks += res.chunks;
    process.stdout.write(`batch ${b}: ${chunks} chunks, ${(performance.now() - t).toFixed(0)} ms (index ${res.ms.index.toFixed(0)} ms)\n`);
  }
  store.close();
} finally {
  rmSync(dir, { recursive: true, force: true });
}
