// Fine-tuning jobs tests' shared helpers: an openai client on a `floe serve` process, a job's end, polling a job or
// any condition, and seeded random chats to train on.

import type OpenAI from 'openai';
import { toFile } from 'openai';

export { client } from './floe-process.js';

export type Job = OpenAI.FineTuning.Jobs.FineTuningJob;

/** Whether a job has ended (succeeded, failed or cancelled). */
export const terminal = (j: Job) => ['succeeded', 'failed', 'cancelled'].includes(j.status);

/** Check `holds` every 50 ms until it is true; the test's timeout bounds the wait. */
export async function waitFor(holds: () => Promise<boolean>): Promise<void> {
  while (!(await holds())) await new Promise((ok) => setTimeout(ok, 50));
}

/** Retrieve job `id` every 50 ms until `until` holds; the test's timeout bounds the wait. */
export async function poll(c: OpenAI, id: string, until: (j: Job) => boolean): Promise<Job> {
  for (;;) {
    const j = await c.fineTuning.jobs.retrieve(id);
    if (until(j)) return j;
    await new Promise((ok) => setTimeout(ok, 50));
  }
}

/** Upload the smallest training file: two copies of one chat ('the river' → 'was long'). */
export const uploadTinyTrain = async (c: OpenAI) => {
  const line = JSON.stringify({ messages: [{ role: 'user', content: 'the river' }, { role: 'assistant', content: 'was long' }] });
  return c.files.create({ file: await toFile(Buffer.from(`${line}\n${line}\n`), 'train.jsonl'), purpose: 'fine-tune' });
};

/** A test's random seed: FT_SEED=N replays a run, otherwise a fresh one (name it in the test's title). */
export const ftSeed = (): number => (process.env.FT_SEED ? Number(process.env.FT_SEED) : Math.floor(Math.random() * 1e9));

const WORDS = ['the', 'river', 'old', 'man', 'said', 'city', 'house', 'was', 'in', 'a', 'long', 'night', 'came', 'from', 'we'];

/** Sentences of 2 to 6 random words, one a call, drawn from `seed` (the same seed, the same sentences). */
export function sentences(seed: number): () => string {
  let s = seed;
  const r = () => { s = (Math.imul(s, 1103515245) + 12345) & 0x7fffffff; return s / 2 ** 31; };
  return () => Array.from({ length: 2 + Math.floor(r() * 5) }, () => WORDS[Math.floor(r() * WORDS.length)]).join(' ');
}

/** A fine-tune JSONL of `n` chats, each a user and an assistant sentence from `sentence`. */
export const chatJsonl = (n: number, sentence: () => string) =>
  Array.from({ length: n }, () => JSON.stringify({ messages: [{ role: 'user', content: sentence() }, { role: 'assistant', content: sentence() }] })).join('\n') + '\n';
