// Messages between the jobs service and a trainer process (plain data over the IPC channel).

import type { FinetuneOptions } from '../../train/trainer.js';

/** Options a trainer process runs with: the trainer's, less its callbacks. */
export type ChildOptions = Omit<FinetuneOptions, 'onStep' | 'log' | 'backendImpl' | 'objective' | 'progress'>;

export type ToChild = { readonly type: 'start'; readonly options: ChildOptions };

export type FromChild =
  | { readonly type: 'metrics'; readonly line: Record<string, unknown> } // a metrics.jsonl line (train or eval)
  | { readonly type: 'checkpoint'; readonly step: number } // OUT/checkpoint-<step> is complete
  | { readonly type: 'log'; readonly message: string } // a trainer note (data counts, "resumed from ... at step N")
  | { readonly type: 'done'; readonly summary: { readonly steps: number; readonly startStep: number; readonly tokens: number; readonly output: string; readonly finalLoss: number | null } }
  | { readonly type: 'error'; readonly message: string };
