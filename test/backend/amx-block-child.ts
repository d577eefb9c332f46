// Child of native-amx-block.test.ts: runs the tile GEMM (forward and training's dx, bf16 and fp8 with scale grids,
// row counts off 32) and the int8 tiles' q8_0r16 matmul (4 to 31 rows, group counts off 4) on seeded data under the
// FLOE_AMX / FLOE_AMX_GEMM_BLOCK / FLOE_AMX_Q8_GROUPS its parent set, and prints the outputs' bytes as hex digests
// with the native counters, so two settings can be compared bit for bit.
import { createHash } from 'node:crypto';
import { loadNativeBackend, nativeCounters } from '../../src/backend/native.js';
import { loadAddon } from '../../src/backend/native-addon.js';
import { quantizeTensor } from '../../src/tensor/quantize.js';
import { Tensor } from '../../src/tensor/tensor.js';
import { asTrain, Rng } from './helpers.js';

const rng = new Rng(Number(process.argv[2]));
const be = loadNativeBackend()!;
const out: Record<string, string> = {};
const digest = (a: Float32Array): string => createHash('sha256').update(new Uint8Array(a.buffer, a.byteOffset, a.byteLength)).digest('hex');
for (const [dtype, block] of [['bf16', undefined], ['fp8_e4m3', undefined], ['fp8_e4m3', [128, 128]], ['fp8_e4m3', [5, 7]]] as const) {
  for (const [M, C, N] of [[33, 160, 100], [64, 544, 97], [47, 1000, 50]] as const) {
    const w = quantizeTensor(rng.normals(N * C, 0.5), [N, C], dtype, { fp8Block: block ? [block[0], block[1]] : dtype === 'fp8_e4m3' ? [1, C] : undefined });
    const y = new Float32Array(M * N);
    be.matmul(y, rng.normals(M * C), w, M);
    const dx = rng.normals(M * C);  // accumulate onto values already there
    asTrain(be).matmulBackwardInput(dx, rng.normals(M * N), w, M, true);
    out[`${dtype} ${block ?? 'row'} ${M}x${C}x${N}`] = `${digest(y)} ${digest(dx)}`;
  }
}
// q8_0r16 (the parent sets FLOE_AMX_Q8_MIN_M=4 so the int8 tiles take every M here): N / 16 groups of 3, 5, 8 and 13
// (and FLOE_GEMV_TASKS=1: with 2 threads each task takes ceil(groups / 2), so 4 groups at once, and tails of 1-3, occur)
const addon = loadAddon()!;
addon.setThreads(2);
for (const [M, C, N] of [[4, 64, 48], [16, 320, 80], [19, 96, 128], [31, 160, 208], [17, 64, 464]] as const) {
  const q = quantizeTensor(rng.normals(N * C, 0.5), [N, C], 'q8_0');
  const w = new Tensor('q8_0', [N, C], addon.q8Repack(q.data, N, C), undefined, undefined, 'q8_0r16');
  const y = new Float32Array(M * N);
  be.matmul(y, rng.normals(M * C), w, M);
  out[`q8_0r16 ${M}x${C}x${N}`] = digest(y);
}
console.log(JSON.stringify({ out, counters: nativeCounters() }));
