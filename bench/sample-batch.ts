// On-policy sampling cost: a micro-batch's continuations decoded one generate() after another vs together with
// sampleBatch (one forward per step over every live sequence), on the same model and seeds, measured back to back.
//
// usage: node --import tsx bench/sample-batch.ts [--model DIR] [--seqs 16] [--tokens 128] [--threads N] [--quick]
// --quick: 4 sequences of 16 tokens (a pipeline check, not a measurement).

import * as os from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { generate } from '../src/model/generate.js';
import { sampleBatch } from '../src/model/generate-batch.js';
import { openModel } from '../src/model/open.js';
import { machineInfo, machineLine } from './machine.js';

const ROOT = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const { values: a } = parseArgs({ options: { model: { type: 'string' }, seqs: { type: 'string' }, tokens: { type: 'string' }, threads: { type: 'string' }, quick: { type: 'boolean' } } });
const quick = !!a.quick;
const S = Number(a.seqs ?? (quick ? 4 : 16)), N = Number(a.tokens ?? (quick ? 16 : 128)), threads = Number(a.threads ?? os.cpus().length);
const model = a.model ?? path.join(ROOT, 'models', 'floe-brown');

const { model: m, tokenizer, loaded } = await openModel(model, { threads });
const prompt = tokenizer!.encode('The old man walked down to the river and');
// EOS never stops a sequence here: every sequence decodes N tokens in both runs
const reqs = Array.from({ length: S }, (_, s) => ({ promptIds: prompt, maxTokens: N, sampling: { temperature: 1, seed: 1000 + s } }));
const stopTokenIds: number[] = [];
sampleBatch(m, reqs.slice(0, 2).map((r) => ({ ...r, maxTokens: 4 })), { kvDtype: 'f32', stopTokenIds }); // warm up
let t = performance.now();
const one = reqs.map((r) => generate(m, r.promptIds, { maxTokens: r.maxTokens, sampling: r.sampling, kvDtype: 'f32', stopTokenIds }).outputIds);
const seqS = (performance.now() - t) / 1000;
t = performance.now();
const together = sampleBatch(m, reqs, { kvDtype: 'f32', stopTokenIds });
const batS = (performance.now() - t) / 1000;
const same = together.filter((o, s) => o.join() === one[s]!.join()).length;
process.stdout.write([
  `machine      ${machineLine(machineInfo())}, ${threads} thread(s), load ${os.loadavg()[0]!.toFixed(1)}`,
  `model        ${model}, ${S} sequences x ${N} tokens (prompt ${prompt.length} tokens), temperature 1, seeded`,
  `one by one   ${seqS.toFixed(2)} s, ${((S * N) / seqS).toFixed(0)} tok/s`,
  `together     ${batS.toFixed(2)} s, ${((S * N) / batS).toFixed(0)} tok/s  (x${(seqS / batS).toFixed(2)})`,
  `same tokens  ${same}/${S} sequences (the native kernels need not be batch-invariant)`,
].join('\n') + '\n');
loaded.dispose();
