// The trainer process of one fine-tuning job (forked by JobRunner): runs floe's trainer with the options it is sent,
// reports metrics.jsonl lines and new checkpoints over IPC, and exits as soon as its parent is gone.

import { closeSync, existsSync, openSync, readSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { listCheckpoints } from '../../train/checkpoint.js';
import { finetune, type FinetuneOptions } from '../../train/trainer.js';
import type { FromChild, ToChild } from './protocol.js';

const send = (m: FromChild): void => { process.send?.(m); };
const parent = process.ppid;

/** The parent was killed (kill -9 leaves no 'disconnect' while training blocks the loop): stop before the next save. */
function parentGone(): boolean {
  if (!process.connected) return true;
  try {
    process.kill(parent, 0);
    return false;
  } catch {
    return true;
  }
}

/** New lines of OUT/metrics.jsonl and new complete checkpoints since the last call. */
function tailer(out: string): () => void {
  const file = join(out, 'metrics.jsonl');
  let offset = 0;
  let partial = '';
  const seen = new Set<number>();
  return () => {
    if (existsSync(file)) {
      const size = statSync(file).size;
      if (size < offset) { offset = 0; partial = ''; } // rewritten (a resume keeps the lines up to its step)
      if (size > offset) {
        const buf = Buffer.alloc(size - offset);
        const fd = openSync(file, 'r');
        try { readSync(fd, buf, 0, buf.length, offset); } finally { closeSync(fd); }
        offset = size;
        const lines = (partial + buf.toString('utf8')).split('\n');
        partial = lines.pop()!;
        for (const l of lines) if (l.trim()) send({ type: 'metrics', line: JSON.parse(l) as Record<string, unknown> });
      }
    }
    for (const c of listCheckpoints(out)) {
      if (seen.has(c.step)) continue;
      seen.add(c.step);
      send({ type: 'checkpoint', step: c.step });
    }
  };
}

// Test hook: FLOE_JOBS_TEST_STEP_MS=N sleeps N ms after every step, so tests can act while a tiny job runs.
const stepMs = Number(process.env.FLOE_JOBS_TEST_STEP_MS ?? 0) || 0;

process.on('disconnect', () => process.exit(0));
process.once('message', (m: ToChild) => {
  void (async () => {
    const opts: FinetuneOptions = m.options;
    const poll = tailer(opts.out);
    try {
      const summary = await finetune({
        ...opts, progress: false,
        log: (line) => send({ type: 'log', message: line }),
        onStep: () => {
          poll();
          if (stepMs > 0) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, stepMs);
          if (parentGone()) process.exit(0);
        },
      });
      poll();
      send({ type: 'done', summary: { steps: summary.steps, startStep: summary.startStep, tokens: summary.tokens, output: summary.output, finalLoss: summary.finalLoss } });
    } catch (e) {
      poll();
      send({ type: 'error', message: (e as Error).message });
    }
    process.disconnect();
  })();
});
