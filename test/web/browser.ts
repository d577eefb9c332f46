// The console's browser tests' set-up (playwright-core on the system's Chromium): which binary, when a test skips, the
// launch, and the end of a run (the browser closed, the servers stopped).

import type { ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chromium, type Browser } from 'playwright-core';

/** CHROMIUM=/path picks the binary (and only it); otherwise Debian's. */
const CHROMIUM = (process.env.CHROMIUM ? [process.env.CHROMIUM] : ['/usr/bin/chromium', '/usr/bin/chromium-browser']).find((p) => existsSync(p));

/** A browser test's `skip`: without a binary it skips, except under CI=true, where launchChromium fails instead. */
export const skip = !CHROMIUM && process.env.CI !== 'true' ? 'no chromium binary (apt-get install chromium, or set CHROMIUM=/path); skipped outside CI' : false;

/** Chromium, headless; under CI=true without a binary it rejects, saying how CI installs one. */
export async function launchChromium(): Promise<Browser> {
  if (!CHROMIUM) throw new Error('CI=true but no chromium binary: .ci/run installs it with apt-get install chromium');
  return chromium.launch({ executablePath: CHROMIUM });
}

/** For after(): close the browser (if launched), SIGTERM each server still running and wait for it to exit. */
export async function closeAll(browser: Browser | undefined, servers: readonly ChildProcess[]): Promise<void> {
  await browser?.close();
  for (const s of servers) {
    if (s.exitCode === null && s.signalCode === null) {
      s.kill('SIGTERM');
      await new Promise((r) => s.once('exit', r));
    }
  }
}
