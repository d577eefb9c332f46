// A contender for test/platform/synth-lock-race.test.ts: on each {go, out} message it waits for the wall-clock
// instant `go`, takes the synth lock on `out` (lockOut), reports won / busy, and when it won holds the lock for
// `holdMs` before releasing it.

import { lockOut } from '../../src/platform/synth/pipeline.js';

process.on('message', (m: { go: number; out: string; holdMs: number } | 'exit') => {
  if (m === 'exit') process.exit(0);
  while (Date.now() < m.go) { /* spin to the common start */ }
  let release: (() => void) | null = null;
  try {
    release = lockOut(m.out);
  } catch (e) {
    process.send!({ won: false, message: (e as Error).message });
    return;
  }
  process.send!({ won: true });
  setTimeout(() => { release!(); process.send!({ released: true }); }, m.holdMs);
});
process.send!({ ready: true });
