// RAG throughput and latency: (1) ingest of Brown documents with the real embedder: chunks/s and embedding tokens/s,
// beside the engine's prefill rate on the same model; (2) query latency p50/p99 per mode at collection sizes
// (default 10k and 100k chunks). For (2) the rows are Brown text chunks with random unit vectors of the embedder's
// dimension, written straight to the table (search cost does not depend on the vectors' values; embedding 100k chunks
// would take the run), then indexed as ingest indexes; query vectors come from the real embedder (timed apart).
// Usage: node --import tsx bench/rag.ts [--model models/floe-embed] [--ingest-docs 40] [--sizes 10000,100000] [--queries 200] [--out FILE.json]

import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { randomUUID } from 'node:crypto';
import { startEngine } from '../src/engine/client.js';
import { loadBrown } from '../src/train/corpus.js';
import { openEmbedder, type RagEmbedder } from '../src/platform/rag/embedder.js';
import { RagStore, type SearchMode } from '../src/platform/rag/store.js';

const pct = (xs: number[], p: number) => { const s = [...xs].sort((a, b) => a - b); return s[Math.min(s.length - 1, Math.floor(p * s.length))]!; };

/** Random unit vectors with the real embedder's dimension and token counting (for building large collections fast). */
function randomVectors(e: RagEmbedder, seed: number): RagEmbedder {
  let s = seed >>> 0;
  const u = () => { s = (Math.imul(s, 1664525) + 1013904223) >>> 0; return s / 2 ** 32 - 0.5; };
  return {
    name: e.name, dim: e.dim, maxTokens: e.maxTokens, countTokens: (t) => e.countTokens(t),
    embed: (texts) => texts.map(() => {
      const v = new Float32Array(e.dim);
      let n = 0;
      for (let i = 0; i < e.dim; i++) { v[i] = u(); n += v[i]! * v[i]!; }
      n = Math.sqrt(n);
      for (let i = 0; i < e.dim; i++) v[i] = v[i]! / n;
      return v;
    }),
  };
}

export async function main(argv: string[]) {
  const { values: v } = parseArgs({ args: argv, options: {
    model: { type: 'string' }, 'ingest-docs': { type: 'string' }, sizes: { type: 'string' }, queries: { type: 'string' }, threads: { type: 'string' }, out: { type: 'string' },
  } });
  const model = v.model ?? 'models/floe-embed';
  if (!existsSync(model)) throw new Error(`${model} does not exist: pass --model`);
  const threads = v.threads ? Number(v.threads) : undefined;
  const emb = await openEmbedder(model, { threads });
  const brown = loadBrown();
  const dir = mkdtempSync(join(tmpdir(), 'floe-rag-bench-'));
  const report: Record<string, unknown> = { model, dim: emb.dim, maxTokens: emb.maxTokens };
  const log = (s: string) => process.stdout.write(s + '\n');
  try {
    // (1) ingest with the real embedder
    const nDocs = Number(v['ingest-docs'] ?? 40);
    const docs = brown.slice(0, nDocs).map((d) => ({ source: `${d.id}.txt`, content: d.paragraphs.map((p) => p.join(' ')).join('\n\n') }));
    const store = await RagStore.open(join(dir, 'ingest'), { create: true });
    const col = await store.create('brown', emb);
    const t0 = performance.now();
    const r = await col.ingest(docs, emb, {});
    const s = (performance.now() - t0) / 1000;
    const ingest = {
      docs: nDocs, chunks: r.chunks, seconds: s, chunksPerS: r.chunks / s, embeddedTokens: r.embeddedTokens,
      embedTokensPerS: r.embeddedTokens / (r.ms.embed / 1000), ms: r.ms,
    };
    log(`ingest: ${nDocs} Brown docs → ${r.chunks} chunks in ${s.toFixed(1)} s = ${ingest.chunksPerS.toFixed(1)} chunks/s; ` +
      `embedding ${r.embeddedTokens} tokens at ${ingest.embedTokensPerS.toFixed(0)} tokens/s (extract+chunk ${r.ms.extract.toFixed(0)} ms, embed ${r.ms.embed.toFixed(0)} ms, write ${r.ms.write.toFixed(0)} ms, index ${r.ms.index.toFixed(0)} ms)`);
    // the engine's prefill rate on the same model: chunk-sized prompts, one output token each, all at once
    const chunkTexts = (await col.table.query().select(['text']).limit(64).toArray()).map((x) => x.text as string);
    const engine = await startEngine({ model, threads, maxNumSeqs: 64 });
    try {
      const tok = (await import('../src/formats/tokenizer.js')).loadTokenizer;
      const t = (await tok(model))!;
      const prompts = chunkTexts.map((c) => t.encode(c));
      const tp = performance.now();
      await Promise.all(prompts.map(async (ids) => {
        for await (const _ of engine.generate({
          id: randomUUID(), promptIds: ids, sampling: { temperature: 0, topK: 0, topP: 1, minP: 0, repetitionPenalty: 1, frequencyPenalty: 0, presencePenalty: 0, logitBias: null, seed: null },
          maxTokens: 1, n: 1, stop: [], stopTokenIds: [], ignoreEos: true, logprobs: null, promptLogprobs: null, skipSpecialTokens: true,
        })) { /* drain */ }
      }));
      const ps = (performance.now() - tp) / 1000;
      const tokens = prompts.reduce((a, p) => a + p.length, 0);
      report.enginePrefill = { prompts: prompts.length, tokens, seconds: ps, tokensPerS: tokens / ps };
      log(`engine prefill (same model, ${prompts.length} chunk prompts at once, 1 output token): ${(tokens / ps).toFixed(0)} tokens/s`);
    } finally {
      await engine.shutdown(0);
    }
    report.ingest = ingest;
    store.close();

    // (2) query latency at sizes
    const sentences = brown.flatMap((d) => d.paragraphs.flat());
    const sizes = (v.sizes ?? '10000,100000').split(',').map(Number);
    const nq = Number(v.queries ?? 200);
    const queries = Array.from({ length: nq }, (_, i) => sentences[(i * 7919) % sentences.length]!);
    const te = performance.now();
    const qv = await emb.embed(queries);
    report.queryEmbedMs = (performance.now() - te) / nq;
    log(`query embedding: ${(report.queryEmbedMs as number).toFixed(1)} ms/query (batched)`);
    const qvOf = new Map(queries.map((q, i) => [q, qv[i]!]));
    const cachedEmb: RagEmbedder = { ...emb, countTokens: (x) => emb.countTokens(x), embed: (texts) => texts.map((x) => qvOf.get(x)!) };
    const latency: Record<string, unknown> = {};
    for (const size of sizes) {
      const st = await RagStore.open(join(dir, `size-${size}`), { create: true });
      const c = await st.create('big', emb);
      const fake = randomVectors(emb, size);
      // rows written straight to the table (ingest cost is part (1)): ~4 Brown sentences each, 10k rows per commit
      const tb = performance.now();
      for (let at = 0; at < size; at += 10_000) {
        const n = Math.min(10_000, size - at);
        const texts = Array.from({ length: n }, (_, i) => { const k = ((at + i) * 4) % sentences.length; return sentences.slice(k, k + 4).join(' '); });
        const vecs = await fake.embed(texts);
        await c.table.add(texts.map((text, i) => ({
          id: `r${at + i}`, source: `doc${Math.floor((at + i) / 500)}.txt`, kind: 'text', doc_hash: 'bench', chunk: (at + i) % 500,
          start_offset: 0, end_offset: text.length, text, vector: vecs[i]!,
        })));
      }
      await c.updateIndexes();
      const build = (performance.now() - tb) / 1000;
      const info = await c.info();
      const modes: Record<string, unknown> = {};
      for (const mode of ['vector', 'bm25', 'hybrid'] as SearchMode[]) {
        const ms: number[] = [];
        for (const q of queries) {
          const t1 = performance.now();
          await c.search(q, cachedEmb, { k: 10, mode });
          ms.push(performance.now() - t1);
        }
        modes[mode] = { p50: pct(ms, 0.5), p99: pct(ms, 0.99), mean: ms.reduce((a, b) => a + b, 0) / ms.length };
        log(`${String(info.chunks).padStart(7)} chunks (${info.vectorIndex ?? 'brute force'}) ${mode.padEnd(6)} k=10: p50 ${pct(ms, 0.5).toFixed(1)} ms, p99 ${pct(ms, 0.99).toFixed(1)} ms`);
      }
      latency[String(size)] = { chunks: info.chunks, vectorIndex: info.vectorIndex, buildSeconds: build, modes };
      log(`  (built in ${build.toFixed(1)} s incl. BM25${info.vectorIndex ? ' and vector' : ''} index)`);
      st.close();
    }
    report.latency = latency;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  if (v.out) writeFileSync(v.out, JSON.stringify(report, null, 1) + '\n');
  return report;
}

if (import.meta.url === `file://${process.argv[1]}`) await main(process.argv.slice(2));
