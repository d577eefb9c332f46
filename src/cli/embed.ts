// `floe embed`: unit vectors of texts from an embedding model (default: the package's models/floe-embed).

import { existsSync } from 'node:fs';
import type { BackendName } from '../backend/select.js';
import { builtinModel, parse, textOrStdin, threadsFlag, UsageError } from './args.js';

export async function embedCmd(args: string[]): Promise<number> {
  const { Embedder } = await import('../model/embed.js');
  const { values: v } = parse(args, {
    model: { type: 'string' }, text: { type: 'string', multiple: true }, json: { type: 'boolean' }, pooling: { type: 'string' },
    threads: { type: 'string' }, backend: { type: 'string' },
  });
  const texts = (v.text ?? []).map(textOrStdin);
  if (texts.length === 0) throw new UsageError('--text T is required (repeat it for several texts; - reads stdin)');
  if (v.pooling !== undefined && v.pooling !== 'mean' && v.pooling !== 'last') throw new UsageError(`--pooling expects mean or last, got '${v.pooling}'`);
  if (v.backend !== undefined && v.backend !== 'native' && v.backend !== 'reference') throw new UsageError(`--backend expects native or reference, got '${v.backend}'`);
  let model = v.model;
  if (model === undefined) {
    model = builtinModel('floe-embed');
    if (!existsSync(model)) throw new UsageError(`--model PATH is required (the built-in embedder ${model} is missing)`);
    process.stderr.write(`[floe] embed: no --model given, using the built-in embedder ${model}\n`);
  }
  const emb = await Embedder.open(model, { pooling: v.pooling as 'mean' | 'last' | undefined, backend: v.backend as BackendName | undefined, threads: threadsFlag(v.threads) });
  const ids = texts.map((t) => emb.encode(t));
  const vecs = emb.embedIds(ids);
  if (v.json) {
    process.stdout.write(JSON.stringify({
      model, dimensions: emb.dim, pooling: emb.pooling,
      data: vecs.map((e, i) => ({ index: i, tokens: ids[i]!.length, truncated: emb.tokenizer.encode(texts[i]!).length > ids[i]!.length, embedding: Array.from(e) })),
    }) + '\n');
  } else for (const e of vecs) process.stdout.write(Array.from(e, (x) => x.toPrecision(7)).join(' ') + '\n');
  return 0;
}
