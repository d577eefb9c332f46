// Worker-thread entry for ChunkWorker: loads a tokenizer, then answers {id, docs, options} with prepared documents.

import { parentPort, threadId, workerData } from 'node:worker_threads';
import { loadTokenizer } from '../../formats/tokenizer.js';
import { prepareDocuments, type DocumentInput, type PrepareOptions } from './prepare.js';

interface Job { readonly id: number; readonly docs: readonly DocumentInput[]; readonly options: PrepareOptions }

const port = parentPort!;
const dir = (workerData as { tokenizerDir: string }).tokenizerDir;
const ready = loadTokenizer(dir).then((t) => {
  if (!t) throw new Error(`${dir}: no tokenizer to count chunk tokens with`);
  return t;
});
port.on('message', async (job: Job) => {
  try {
    const tok = await ready;
    const docs = prepareDocuments(job.docs, job.options, (text) => tok.encode(text, { addSpecialTokens: true }).length);
    port.postMessage({ id: job.id, docs, threadId });
  } catch (e) {
    port.postMessage({ id: job.id, error: (e as Error).message, threadId });
  }
});
