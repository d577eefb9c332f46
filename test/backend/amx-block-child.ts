// Child of native-amx-block.test.ts: runs the tile GEMM (forward and training's dx, bf16 and fp8 with scale grids,
// row counts off 32) on seeded data under the FLOE_AMX / FLOE_AMX_GEMM_BLOCK its parent set, and prints the outputs'
// bytes as hex digests with the native counters, so two settings can be compared bit for bit.
import { createHash } from 'node:crypto';
import { loadNativeBackend, nativeCounters } from '../../src/backend/native.js';
import { quantizeTensor } from '../../src/tensor/quantize.js';
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
console.log(JSON.stringify({ out, counters: nativeCounters() }));
