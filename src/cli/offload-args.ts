// --weights-memory SIZE / --offload-ratio F (generate, chat, serve, finetune, distill): OffloadOptions, or undefined.

import type { OffloadOptions } from '../model/offload.js';
import { conflicts, num, parseSize, UsageError } from './args.js';

export const OFFLOAD_FLAGS = { 'weights-memory': { type: 'string' }, 'offload-ratio': { type: 'string' } } as const;

export function offloadOptions(v: { 'weights-memory'?: string | boolean; 'offload-ratio'?: string | boolean }): OffloadOptions | undefined {
  conflicts(v, [['weights-memory', 'offload-ratio']]);
  const wm = v['weights-memory'], r = v['offload-ratio'];
  if (typeof wm === 'string') {
    try { return { weightsMemory: parseSize(wm) }; } catch (e) { throw new UsageError(`--weights-memory: ${(e as Error).message}`); }
  }
  if (typeof r === 'string') return { offloadRatio: num(r, 'offload-ratio', 0, false, { max: 1 }) };
  return undefined;
}
