// mpirun for tests: Open MPI's root switches and --oversubscribe (CI runs as root on 2 cores), a stated skip reason.

import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';

export const ROOT = join(import.meta.dirname, '..', '..');
export const BIN = join(ROOT, 'bin', 'floe.js');
export const BROWN = join(ROOT, 'models', 'floe-brown');

const hasMpirun = spawnSync('mpirun', ['--version'], { encoding: 'utf8' }).status === 0;
const hasAddon = existsSync(join(ROOT, 'build', 'Release', 'floe_mpi.node'));

/** false, or why the MPI tests cannot run here. */
export const MPI_SKIP: false | string = !hasMpirun
  ? 'mpirun is not installed (apt-get install openmpi-bin libopenmpi-dev; CI installs it)'
  : !hasAddon ? 'build/Release/floe_mpi.node is not built (npx node-gyp rebuild after installing Open MPI)' : false;

/** Documented switches for running Open MPI as root (CI containers). */
export const MPI_ENV = { ...process.env, OMPI_ALLOW_RUN_AS_ROOT: '1', OMPI_ALLOW_RUN_AS_ROOT_CONFIRM: '1', OMPI_MCA_rmaps_base_oversubscribe: '1' };

/** mpirun's arguments for `np` ranks of `floe args...`; tcp forces TCP over loopback instead of shared memory. */
export function mpirunArgs(np: number, tcp: boolean, args: readonly string[]): string[] {
  return ['-np', String(np), '--oversubscribe', ...(tcp ? ['--mca', 'btl', 'tcp,self', '--mca', 'btl_tcp_if_include', 'lo'] : []), process.execPath, BIN, ...args];
}
