// Fine-tuning jobs tests' shared helpers: an openai client on a `floe serve` process, a job's end, polling a job.

import OpenAI from 'openai';
import type { Floe } from './floe-process.js';

export type Job = OpenAI.FineTuning.Jobs.FineTuningJob;

/** The official openai client on `f` (no retries: a failed call shows at once). */
export const client = (f: Floe) => new OpenAI({ baseURL: f.url + '/v1', apiKey: 'unused', maxRetries: 0 });

/** Whether a job has ended (succeeded, failed or cancelled). */
export const terminal = (j: Job) => ['succeeded', 'failed', 'cancelled'].includes(j.status);

/** Retrieve job `id` every 50 ms until `until` holds; the test's timeout bounds the wait. */
export async function poll(c: OpenAI, id: string, until: (j: Job) => boolean): Promise<Job> {
  for (;;) {
    const j = await c.fineTuning.jobs.retrieve(id);
    if (until(j)) return j;
    await new Promise((ok) => setTimeout(ok, 50));
  }
}
