// Loader and typed surface of the optional Open MPI addon (build/Release/floe_mpi.node, native/mpi/mpi_addon.cc).

import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Every call but version() runs on the addon's MPI thread; the Promise settles in the event loop. */
export interface MpiAddon {
  /** MPI_Init_thread(MPI_THREAD_FUNNELED) on the MPI thread; once per process. */
  init(): Promise<{ rank: number; size: number; threadFunneled: boolean }>;
  /** Non-blocking send; `bytes` must stay unchanged until the Promise settles. comm 0 = MPI_COMM_WORLD. */
  isend(dest: number, tag: number, bytes: ArrayBufferView, comm?: number): Promise<void>;
  /** Receive one message of any size; source or tag -1 = any. */
  recv(source: number, tag: number, comm?: number): Promise<{ data: ArrayBuffer; source: number; tag: number }>;
  barrier(comm?: number): Promise<void>;
  allreduce(values: Float64Array, op: 'sum' | 'min' | 'max', comm?: number): Promise<Float64Array>;
  /** MPI_Comm_split: the new communicator's id. */
  split(color: number, key: number, comm?: number): Promise<number>;
  /** Print `message` and MPI_Abort(MPI_COMM_WORLD, code): every rank of the job ends. */
  abort(code: number, message: string): Promise<never>;
  finalize(): Promise<void>;
  version(): string;
}

export const MPI_INSTALL_HINT =
  'pipeline parallelism needs Open MPI and floe\'s MPI addon: apt-get install openmpi-bin libopenmpi-dev, then ' +
  '`npx node-gyp rebuild` in the floe package (it builds build/Release/floe_mpi.node when mpicxx exists), and launch with ' +
  '`mpirun -np N floe ...` (as root also set OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1)';

let cached: MpiAddon | null | undefined;

/** The addon, or null when it has not been built (no Open MPI at install time). */
export function loadMpiAddon(): MpiAddon | null {
  if (cached !== undefined) return cached;
  const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
  // src/parallel → package root; from dist/src/parallel one more level up
  const candidates = [join(root, 'build', 'Release', 'floe_mpi.node'), join(root, '..', 'build', 'Release', 'floe_mpi.node')];
  const path = candidates.find((p) => existsSync(p));
  cached = path ? (createRequire(import.meta.url)(path) as MpiAddon) : null;
  return cached;
}

/** Launched by mpirun (Open MPI sets OMPI_COMM_WORLD_SIZE in every rank's environment). */
export function launchedByMpirun(): boolean {
  return process.env.OMPI_COMM_WORLD_SIZE !== undefined || process.env.PMIX_RANK !== undefined;
}
