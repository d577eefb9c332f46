// 1F1B: the order in which one pipeline stage runs the forwards (F) and backwards (B) of a step's micro-batches.
//
//   stage 0 of 3, M = 5:  F0 F1 F2 B0 F3 B1 F4 B2 B3 B4     warm-up P-s-1 forwards, then one forward one backward,
//   stage 2 of 3, M = 5:  F0 B0 F1 B1 F2 B2 F3 B3 F4 B4     then the cool-down backwards
//
// At most min(M, P - s) micro-batches are in flight on stage s (forward done, backward not), so micro-batch i can
// keep its activations in slot i mod (P - s).

export interface PipeOp { readonly kind: 'F' | 'B'; readonly micro: number }

export function oneFOneB(stage: number, numStages: number, numMicro: number): PipeOp[] {
  if (!(Number.isInteger(stage) && stage >= 0 && stage < numStages)) throw new RangeError(`stage ${stage} is not in [0, ${numStages})`);
  if (!(Number.isInteger(numMicro) && numMicro >= 1)) throw new RangeError(`micro-batches must be an integer >= 1, got ${numMicro}`);
  const warm = Math.min(numStages - stage - 1, numMicro);
  const ops: PipeOp[] = [];
  for (let i = 0; i < warm; i++) ops.push({ kind: 'F', micro: i });
  for (let i = 0; i < numMicro - warm; i++) ops.push({ kind: 'F', micro: warm + i }, { kind: 'B', micro: i });
  for (let i = numMicro - warm; i < numMicro; i++) ops.push({ kind: 'B', micro: i });
  return ops;
}

/** Micro-batches in flight at most on `stage`: the activation slots it needs. */
export function slotsNeeded(stage: number, numStages: number, numMicro: number): number {
  return Math.min(numMicro, numStages - stage);
}
