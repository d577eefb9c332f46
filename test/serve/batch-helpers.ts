// Batch API tests' shared helpers: an openai client on a `floe serve` process, a batch's end, polling a batch.

import type OpenAI from 'openai';

export { client } from './floe-process.js';

type Batch = OpenAI.Batches.Batch;

/** Whether a batch has ended (completed, failed, cancelled or expired). */
export const terminal = (b: Batch) => ['completed', 'failed', 'cancelled', 'expired'].includes(b.status);

/** Retrieve batch `id` every 50 ms until `until` holds; the test's timeout bounds the wait. */
export async function poll(c: OpenAI, id: string, until: (b: Batch) => boolean): Promise<Batch> {
  for (;;) {
    const b = await c.batches.retrieve(id);
    if (until(b)) return b;
    await new Promise((ok) => setTimeout(ok, 50));
  }
}
