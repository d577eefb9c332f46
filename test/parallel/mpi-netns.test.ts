// Two "hosts" as two network namespaces joined by a veth pair: mpirun (inside the first) reaches both through an rsh
// agent that enters the namespace (netns-rsh.sh, as ssh would reach a host), the ranks talk over Open MPI's TCP BTL
// on the veth subnet only, and `floe generate --pipeline-parallel-size 2` equals one process (f32: bit for bit).

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { readHfConfig } from '../../src/formats/hf-config.js';
import { outMessageBytes, stepMessageBytes } from '../../src/parallel/pipeline.js';
import { BIN, BROWN, MPI_ENV, MPI_SKIP } from './mpi-helpers.js';

const V = 4096;
const D = readHfConfig(BROWN).config.hiddenSize;
const AGENT = join(import.meta.dirname, 'netns-rsh.sh');
const tag = String(process.pid % 100000);
const HOSTS = [`floe-a${tag}`, `floe-b${tag}`] as const; // namespace = host name
const VETH = [`va${tag}`, `vb${tag}`] as const;
const NET = `10.213.${process.pid % 250}`; // private range, configured inside the namespaces only

function ip(...args: string[]): { ok: boolean; out: string } {
  const r = spawnSync('ip', args, { encoding: 'utf8' });
  return { ok: r.status === 0, out: `${r.stdout ?? ''}${r.stderr ?? ''}${r.error ? r.error.message : ''}` };
}

/** false, or why two namespaces cannot be made here (the test must run where CI runs: as root, with iproute2). */
function netnsSkip(): false | string {
  if (MPI_SKIP) return MPI_SKIP;
  if (spawnSync('ip', ['-V']).status !== 0) return '`ip` (iproute2) is not installed (apt-get install iproute2; CI installs it)';
  const probe = `floe-p${tag}`;
  const add = ip('netns', 'add', probe);
  if (!add.ok) return `ip netns is not permitted here (needs root / CAP_SYS_ADMIN): ${add.out.trim()}`;
  ip('netns', 'del', probe);
  return false;
}
const SKIP = netnsSkip();

function must(...args: string[]): void {
  const r = ip(...args);
  if (!r.ok) throw new Error(`ip ${args.join(' ')}: ${r.out}`);
}

before(() => {
  if (SKIP) return;
  for (const h of HOSTS) must('netns', 'add', h);
  must('link', 'add', VETH[0], 'type', 'veth', 'peer', 'name', VETH[1]);
  for (let i = 0; i < 2; i++) {
    must('link', 'set', VETH[i], 'netns', HOSTS[i]);
    must('-n', HOSTS[i], 'addr', 'add', `${NET}.${i + 1}/24`, 'dev', VETH[i]);
    must('-n', HOSTS[i], 'link', 'set', 'lo', 'up');
    must('-n', HOSTS[i], 'link', 'set', VETH[i], 'up');
  }
});

after(() => {
  if (SKIP) return;
  for (const h of HOSTS) ip('netns', 'del', h); // takes its end of the veth pair with it
});

/** Bytes both ways through host B's end of the veth. */
function vethBytes(): number {
  const r = ip('-n', HOSTS[1], '-j', '-s', 'link', 'show', 'dev', VETH[1]);
  assert.ok(r.ok, r.out);
  const s = (JSON.parse(r.out) as { stats64: { rx: { bytes: number }; tx: { bytes: number } } }[])[0]!.stats64;
  return s.rx.bytes + s.tx.bytes;
}

test('mpirun across two network namespaces (TCP over a veth pair) runs floe generate as one process does', { skip: SKIP, timeout: 180_000 }, () => {
  const T = 4 + Math.floor(Math.random() * 40);
  const prompt = Array.from({ length: T }, () => Math.floor(Math.random() * (V - 8))).join(',');
  const args = ['generate', '--model', BROWN, '--prompt-ids', prompt, '--max-tokens', '12', '--temperature', '0', '--logprobs', '2', '--json'];
  const one = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(one.status, 0, one.stderr);
  const want = JSON.parse(one.stdout);

  const before = vethBytes();
  const mpirun = [
    'netns', 'exec', HOSTS[0], 'mpirun', '-np', '2', '--host', HOSTS.join(','), '--map-by', 'node',
    '--mca', 'plm_rsh_agent', AGENT, '--mca', 'plm_rsh_no_tree_spawn', '1',
    '--mca', 'btl', 'tcp,self', '--mca', 'btl_tcp_if_include', `${NET}.0/24`, '--mca', 'oob_tcp_if_include', `${NET}.0/24`,
    process.execPath, BIN, ...args, '--pipeline-parallel-size', '2',
  ];
  const r = spawnSync('ip', mpirun, { encoding: 'utf8', timeout: 120_000, env: MPI_ENV });
  assert.equal(r.signal, null, `mpirun hung:\n${r.stderr}`);
  assert.equal(r.status, 0, r.stderr);
  const got = JSON.parse(r.stdout);
  assert.ok(want.output_ids.length >= 1);
  assert.deepEqual(got.output_ids, want.output_ids);
  assert.deepEqual(got.logprobs, want.logprobs);

  // the stages really were on two hosts: at least the activations crossed the veth (prefill of T rows, then one row
  // per generated token, down and back as f32); ranks sharing a namespace would not touch it
  const steps = want.output_ids.length;
  const minBytes = stepMessageBytes(T, 1, 1, 1, D, 'f32') + outMessageBytes(1, D, 'f32') +
    (steps - 1) * (stepMessageBytes(1, 1, 1, 1, D, 'f32') + outMessageBytes(1, D, 'f32'));
  const crossed = vethBytes() - before;
  assert.ok(crossed >= minBytes, `${crossed} bytes crossed the veth, the pipeline's messages alone are ${minBytes}`);
});
