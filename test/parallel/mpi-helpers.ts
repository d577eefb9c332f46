// mpirun for tests: Open MPI's root switches and --oversubscribe (CI runs as root on 2 cores), a stated skip reason.

import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT } from '../repo.js';

export { ROOT };
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

import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';

export interface Launched {
  readonly proc: ChildProcess;
  readonly url: string;
  readonly log: () => string; // stdout + stderr so far
  readonly exited: Promise<{ code: number | null; signal: string | null; at: number }>;
}

/** Start `floe serve` (under mpirun when np > 0) on a free port; resolves once /health answers 200. */
export async function launchServe(np: number, tcp: boolean, args: readonly string[], env: Record<string, string> = {}): Promise<Launched> {
  const serve = ['serve', '--model', BROWN, '--port', '0', '--no-ui', '--no-batch', '--kv-cache-memory', '32MiB', ...args];
  const proc = np > 0
    ? spawn('mpirun', mpirunArgs(np, tcp, [...serve, '--pipeline-parallel-size', String(np)]), { env: { ...MPI_ENV, ...env } })
    : spawn(process.execPath, [BIN, ...serve], { env: { ...process.env, ...env } });
  let out = '';
  proc.stdout!.on('data', (d) => (out += d));
  proc.stderr!.on('data', (d) => (out += d));
  const exited = new Promise<{ code: number | null; signal: string | null; at: number }>((r) => proc.on('exit', (code, signal) => r({ code, signal, at: Date.now() })));
  const deadline = Date.now() + 90_000;
  let url = '';
  for (;;) {
    if (proc.exitCode !== null || Date.now() > deadline) { proc.kill('SIGKILL'); throw new Error(`floe serve did not come up:\n${out}`); }
    url ||= /listening on (http:\S+)/.exec(out)?.[1] ?? '';
    if (url) {
      const ok = await fetch(`${url}/health`).then((r) => r.ok, () => false);
      if (ok) break;
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  return { proc, url, log: () => out, exited };
}

/** The pid of MPI rank `rank` among mpirun's children (Open MPI puts OMPI_COMM_WORLD_RANK in each one's environment). */
export function rankPid(mpirunPid: number, rank: number): number {
  const kids = readFileSync(`/proc/${mpirunPid}/task/${mpirunPid}/children`, 'utf8').trim().split(/\s+/).map(Number);
  for (const pid of kids) {
    const env = readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0');
    if (env.includes(`OMPI_COMM_WORLD_RANK=${rank}`)) return pid;
  }
  throw new Error(`no child of mpirun ${mpirunPid} is rank ${rank} (children ${kids.join(', ')})`);
}
