// One rank of the transport test (run by mpi-transport.test.ts under mpirun): many concurrent sends and receives of
// random sizes (eager and rendezvous) arrive complete and in order; allreduce and barrier agree across ranks.

import { MpiTransport } from '../../src/parallel/transport.js';

const tr = await MpiTransport.init();
const { rank, size } = tr;
const N = 40;
const to = (rank + 1) % size;
const from = (rank + size - 1) % size;
const fill = (seed: number, n: number) => {
  const a = new Uint8Array(n);
  let x = seed >>> 0;
  for (let i = 0; i < n; i++) { x = (Math.imul(x, 1664525) + 1013904223) >>> 0; a[i] = x >>> 24; }
  return a;
};
// sizes from 1 byte to ~300 KB, from a seed every rank derives alike for its sender
const sizeOf = (src: number, i: number) => 1 + ((src * 7919 + i * 104729) % 300_000);
const msgs = Array.from({ length: N }, (_, i) => {
  const m = fill(rank * 1000 + i, sizeOf(rank, i) + 4);
  new DataView(m.buffer).setInt32(0, i, true);
  return m;
});
const recvs = Array.from({ length: N }, () => tr.recv(from, 5));
const sends = msgs.map((m) => tr.send(to, 5, m));
const got = await Promise.all(recvs);
await Promise.all(sends);
for (let i = 0; i < N; i++) {
  const g = got[i]!;
  const want = fill(from * 1000 + i, sizeOf(from, i) + 4);
  new DataView(want.buffer).setInt32(0, i, true);
  if (g.length !== want.length || g.some((b, j) => b !== want[j])) {
    await tr.abort(3, `rank ${rank}: message ${i} from rank ${from} arrived as message ${new DataView(g.buffer, g.byteOffset).getInt32(0, true)} with ${g.length} bytes, expected ${want.length}`);
  }
}
const sum = await tr.allreduce(Float64Array.of(rank, 1), 'sum');
const min = await tr.allreduce(Float64Array.of(rank + 10), 'min');
const max = await tr.allreduce(Float64Array.of(rank + 10), 'max');
await tr.barrier();
if (sum[0] !== (size * (size - 1)) / 2 || sum[1] !== size || min[0] !== 10 || max[0] !== size + 9) {
  await tr.abort(4, `rank ${rank}: allreduce gave sum ${Array.from(sum)}, min ${min[0]}, max ${max[0]}`);
}
process.stdout.write(`rank ${rank}/${size} ok ${N} messages\n`);
await tr.close();
