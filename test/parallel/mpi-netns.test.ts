// Two "hosts" as two network namespaces joined by a veth pair: mpirun (inside the first) reaches both through an rsh
// agent that enters the namespace (netns-rsh.sh, as ssh would reach a host), the ranks talk over Open MPI's TCP BTL
// on the veth subnet only, and `floe generate --pipeline-parallel-size 2` equals one process (f32: bit for bit), as
// does `floe serve` on host A for the official openai client (reaching host A through a second veth pair), and
// `floe finetune` (1F1B across the hosts: per-step losses and the assembled PEFT adapter as `--grad-accum` in one process).

import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import OpenAI from 'openai';
import { readHfConfig } from '../../src/formats/hf-config.js';
import { outMessageBytes, stepMessageBytes } from '../../src/parallel/pipeline.js';
import { assertSameAdapter, assertSameRun, finetuneArgs, M, metrics, singleRun } from './finetune-compare.js';
import { BIN, BROWN, launchServe, MPI_ENV, MPI_SKIP } from './mpi-helpers.js';
import { randomData } from './train-data.js';
import { repoPath } from '../repo.js';

const V = 4096;
const D = readHfConfig(BROWN).config.hiddenSize;
const AGENT = repoPath('test/parallel/netns-rsh.sh');
const tag = String(process.pid % 100000);
const HOSTS = [`floe-a${tag}`, `floe-b${tag}`] as const; // namespace = host name
const VETH = [`va${tag}`, `vb${tag}`] as const;
const NET = `10.213.${process.pid % 250}`; // private range, configured inside the namespaces only
const CLIENT_NET = `10.214.${process.pid % 250}`; // a second veth pair: this process (the HTTP client) ↔ host A
const CLIENT_VETH = [`vc${tag}`, `vd${tag}`] as const; // vc here, vd in host A

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
  must('link', 'add', CLIENT_VETH[0], 'type', 'veth', 'peer', 'name', CLIENT_VETH[1]);
  must('link', 'set', CLIENT_VETH[1], 'netns', HOSTS[0]);
  must('addr', 'add', `${CLIENT_NET}.254/24`, 'dev', CLIENT_VETH[0]);
  must('-n', HOSTS[0], 'addr', 'add', `${CLIENT_NET}.1/24`, 'dev', CLIENT_VETH[1]);
  must('link', 'set', CLIENT_VETH[0], 'up');
  must('-n', HOSTS[0], 'link', 'set', CLIENT_VETH[1], 'up');
});

after(() => {
  if (SKIP) return;
  for (const h of HOSTS) ip('netns', 'del', h); // takes its end of each veth pair with it (and so the pair)
});

/** mpirun inside host A, ranks on A and B over TCP on the veth subnet only: its arguments for `ip`. */
function mpirunInNetns(args: readonly string[]): string[] {
  return [
    'netns', 'exec', HOSTS[0], 'mpirun', '-np', '2', '--host', HOSTS.join(','), '--map-by', 'node',
    '--mca', 'plm_rsh_agent', AGENT, '--mca', 'plm_rsh_no_tree_spawn', '1',
    '--mca', 'btl', 'tcp,self', '--mca', 'btl_tcp_if_include', `${NET}.0/24`, '--mca', 'oob_tcp_if_include', `${NET}.0/24`,
    process.execPath, BIN, ...args, '--pipeline-parallel-size', '2',
  ];
}

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
  const r = spawnSync('ip', mpirunInNetns(args), { encoding: 'utf8', timeout: 120_000, env: MPI_ENV });
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

/** Concurrent greedy completions (they share engine steps): text, token ids and finish reason of each. */
async function ask(url: string, prompts: readonly number[][]) {
  const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'unused', maxRetries: 0, timeout: 60_000 });
  type Params = OpenAI.CompletionCreateParamsNonStreaming & { return_token_ids: boolean };
  return Promise.all(prompts.map(async (prompt, i) => {
    const params: Params = { model: 'floe-brown', prompt, max_tokens: 6 + 2 * i, temperature: 0, return_token_ids: true };
    const c = (await client.completions.create(params)).choices[0]!;
    return { text: c.text, ids: (c as unknown as { token_ids?: number[] }).token_ids, finish: c.finish_reason };
  }));
}

test('mpirun across two network namespaces: floe serve on host A answers the openai client as one process does', { skip: SKIP, timeout: 240_000 }, async () => {
  const prompts = Array.from({ length: 5 }, () => Array.from({ length: 3 + Math.floor(Math.random() * 30) }, () => 10 + Math.floor(Math.random() * (V - 20))));
  const one = await launchServe(0, false, []);
  let want: Awaited<ReturnType<typeof ask>>;
  try { want = await ask(one.url, prompts); } finally { one.proc.kill('SIGTERM'); await one.exited; }
  assert.ok(want.every((w) => (w.ids?.length ?? 0) >= 1));

  const serve = ['serve', '--model', BROWN, '--host', `${CLIENT_NET}.1`, '--port', '0', '--no-ui', '--no-batch', '--kv-cache-memory', '32MiB'];
  const proc = spawn('ip', mpirunInNetns(serve), { env: MPI_ENV });
  let log = '';
  proc.stdout.on('data', (d) => (log += d));
  proc.stderr.on('data', (d) => (log += d));
  const exited = new Promise((r) => proc.on('exit', r));
  try {
    let url = '';
    for (const end = Date.now() + 90_000; ;) {
      assert.ok(proc.exitCode === null && Date.now() < end, `floe serve did not come up across the namespaces:\n${log}`);
      url ||= /listening on (http:\S+)/.exec(log)?.[1] ?? '';
      if (url && await fetch(`${url}/health`).then((r) => r.ok, () => false)) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    const before = vethBytes();
    assert.deepEqual(await ask(url, prompts), want);
    assert.ok(vethBytes() - before >= prompts.length * outMessageBytes(1, D, 'f32'), 'the steps crossed between the namespaces');
  } finally {
    proc.kill('SIGTERM'); // mpirun ends both ranks
    const t = setTimeout(() => proc.kill('SIGKILL'), 20_000);
    await exited;
    clearTimeout(t);
  }
});

test('mpirun across two network namespaces: floe finetune (1F1B, a stage per host) equals one process; the adapter too', { skip: SKIP, timeout: 300_000 }, () => {
  const work = mkdtempSync(join(tmpdir(), 'floe-netns-ft-'));
  const args = finetuneArgs(randomData(work, 16), String(Math.floor(Math.random() * 1e6)));
  const want = singleRun(args, join(work, 'single'));

  const out = join(work, 'pp2');
  const before = vethBytes();
  const r = spawnSync('ip', mpirunInNetns([...args, '--out', out, '--micro-batches', String(M)]), { encoding: 'utf8', timeout: 240_000, env: MPI_ENV });
  assert.equal(r.signal, null, `mpirun hung:\n${r.stderr}`);
  assert.equal(r.status, 0, r.stderr);
  assert.equal((JSON.parse(r.stdout) as { steps: number }).steps, 4); // only rank 0 prints
  const got = metrics(out);
  assertSameRun(got, want);
  assertSameAdapter(join(out, 'final'), join(work, 'single', 'final'));
  for (const s of [0, 1]) assert.ok(existsSync(join(out, `stage-${s}`, 'checkpoint-000002', 'adapter_model.safetensors')), `stage ${s} checkpointed step 2`);

  // the stages really were on two hosts: every trained token's f32 activations went down the veth and its gradients back
  const minBytes = 2 * got.reduce((a, m) => a + m.tokens, 0) * D * 4;
  const crossed = vethBytes() - before;
  assert.ok(crossed >= minBytes, `${crossed} bytes crossed the veth, the activations and gradients alone are ${minBytes}`);
});
