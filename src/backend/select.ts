// selectBackend: the native backend when the addon is built, else the reference (or whichever is asked for).

import type { Backend } from './backend.js';
import { loadNativeBackend } from './native.js';
import { referenceBackend } from './reference.js';
import { addonPath, loadAddon } from './native-addon.js';
import { describe } from '../tensor/options.js';

export type BackendName = 'native' | 'reference';

/**
 * The most kernel threads one pool takes (llama.cpp's GGML_MAX_N_THREADS is 512): past the cores they only contend, and
 * 100000 would take the host's whole pid space before the OS refuses one. Where it refuses fewer (ulimit -u, a pids
 * cgroup), the addon's setThreads throws naming the thread and its pool keeps the size it had.
 */
export const MAX_THREADS = 1024;

export function selectBackend(name?: BackendName, threads?: number): Backend {
  if (name !== undefined && name !== 'native' && name !== 'reference') throw new TypeError(`backend must be 'native' or 'reference', got ${describe(name)}`);
  if (threads !== undefined && !(Number.isInteger(threads) && threads >= 1 && threads <= MAX_THREADS)) throw new RangeError(`threads must be an integer from 1 to ${MAX_THREADS}, got ${describe(threads)}`);
  if (name === 'reference') return referenceBackend;
  const native = loadNativeBackend();
  if (!native) {
    if (name === 'native') {
      throw new Error(`the native backend is not built (no ${addonPath()}): run \`npm rebuild floe\` in the project that installed floe ` +
        "(npm 12 first: `npm approve-scripts floe`), or `npm install` in a floe checkout; node-gyp needs g++, make and python3. " +
        "Without it, backend 'reference' runs the same models in TypeScript, correct but slower");
    }
    return referenceBackend;
  }
  if (threads !== undefined) loadAddon()!.setThreads(threads);
  return native;
}
