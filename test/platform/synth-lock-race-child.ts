// A contender for test/platform/synth-lock-race.test.ts: on each {go, out} message it waits for the wall-clock
// instant `go`, takes the synth lock on `out` (lockOut), reports won / busy, and when it won holds the lock until the
// test says 'release' (once every contender has answered: a contender that came late still finds the lock held).

import { lockOut } from '../../src/platform/synth/pipeline.js';

let held: (() => void) | null = null;
process.on('message', (m: { go: number; out: string } | 'release' | 'exit') => {
  if (m === 'exit') process.exit(0);
  if (m === 'release') { held!(); held = null; process.send!({ released: true }); return; }
  while (Date.now() < m.go) { /* spin to the common start */ }
  try {
    held = lockOut(m.out);
  } catch (e) {
    process.send!({ won: false, message: (e as Error).message });
    return;
  }
  process.send!({ won: true });
});
process.send!({ ready: true });
