// Transport: how pipeline stages reach each other. MPI across processes (mpirun), or in-process for tests.

import { launchedByMpirun, loadMpiAddon, MPI_INSTALL_HINT, type MpiAddon } from './mpi-addon.js';

export interface Transport {
  readonly rank: number;
  readonly size: number;
  /** Resolves once `bytes` may be reused. */
  send(dest: number, tag: number, bytes: Uint8Array): Promise<void>;
  /** The next message from `source` with `tag` (in send order). */
  recv(source: number, tag: number): Promise<Uint8Array>;
  barrier(): Promise<void>;
  allreduce(values: Float64Array, op: 'sum' | 'min' | 'max'): Promise<Float64Array>;
  /** End every rank of the job with `message` on stderr; does not return. */
  abort(code: number, message: string): Promise<never>;
  close(): Promise<void>;
}

export class MpiTransport implements Transport {
  private constructor(private readonly mpi: MpiAddon, readonly rank: number, readonly size: number) {}

  /** Initialise MPI in this process (once); throws with install instructions when the addon is missing. */
  static async init(): Promise<MpiTransport> {
    const mpi = loadMpiAddon();
    if (!mpi) throw new Error(MPI_INSTALL_HINT);
    if (!launchedByMpirun()) throw new Error(`not launched by mpirun (OMPI_COMM_WORLD_SIZE is unset): ${MPI_INSTALL_HINT}`);
    const { rank, size, threadFunneled } = await mpi.init();
    if (!threadFunneled) throw new Error('Open MPI does not provide MPI_THREAD_FUNNELED');
    return new MpiTransport(mpi, rank, size);
  }

  send(dest: number, tag: number, bytes: Uint8Array): Promise<void> { return this.mpi.isend(dest, tag, bytes); }
  async recv(source: number, tag: number): Promise<Uint8Array> { return new Uint8Array((await this.mpi.recv(source, tag)).data); }
  barrier(): Promise<void> { return this.mpi.barrier(); }
  allreduce(values: Float64Array, op: 'sum' | 'min' | 'max'): Promise<Float64Array> { return this.mpi.allreduce(values, op); }
  abort(code: number, message: string): Promise<never> { return this.mpi.abort(code, message); }
  close(): Promise<void> { return this.mpi.finalize(); }
}

/** `size` in-process ranks joined by queues; messages are copied, as over a wire. */
export function localGroup(size: number): Transport[] {
  const boxes = new Map<string, { msgs: Uint8Array[]; waiters: ((m: Uint8Array) => void)[] }>();
  const box = (src: number, dst: number, tag: number) => {
    const k = `${src}>${dst}#${tag}`;
    let b = boxes.get(k);
    if (!b) boxes.set(k, (b = { msgs: [], waiters: [] }));
    return b;
  };
  let barrier: { n: number; release: (() => void)[] } = { n: 0, release: [] };
  let reduce: { n: number; acc: Float64Array | null; op: string; release: ((v: Float64Array) => void)[] } = { n: 0, acc: null, op: '', release: [] };
  let aborted: string | null = null;
  const ranks: Transport[] = [];
  for (let rank = 0; rank < size; rank++) {
    ranks.push({
      rank, size,
      async send(dest, tag, bytes) {
        if (aborted !== null) throw new Error(`local transport aborted: ${aborted}`);
        const b = box(rank, dest, tag);
        const m = bytes.slice();
        const w = b.waiters.shift();
        if (w) w(m); else b.msgs.push(m);
      },
      recv(source, tag) {
        const b = box(source, rank, tag);
        const m = b.msgs.shift();
        return m ? Promise.resolve(m) : new Promise((r) => b.waiters.push(r));
      },
      barrier() {
        return new Promise<void>((r) => {
          barrier.release.push(r);
          if (++barrier.n === size) { const rel = barrier.release; barrier = { n: 0, release: [] }; rel.forEach((f) => f()); }
        });
      },
      allreduce(values, op) {
        return new Promise<Float64Array>((r) => {
          const c = reduce;
          if (c.acc === null) { c.acc = values.slice(); c.op = op; } else {
            if (c.op !== op) throw new Error(`allreduce: rank ${rank} reduces with ${op}, another with ${c.op}`);
            for (let i = 0; i < values.length; i++) {
              const a = c.acc[i]!, b = values[i]!;
              c.acc[i] = op === 'sum' ? a + b : op === 'min' ? Math.min(a, b) : Math.max(a, b);
            }
          }
          c.release.push(r);
          if (++c.n === size) { reduce = { n: 0, acc: null, op: '', release: [] }; c.release.forEach((f) => f(c.acc!.slice())); }
        });
      },
      async abort(_code, message) {
        aborted = message;
        throw new Error(`local transport aborted by rank ${rank}: ${message}`);
      },
      async close() {},
    });
  }
  return ranks;
}
