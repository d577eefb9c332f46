// Decode A/B through generate(): one model file, the addon with and without an environment setting (a kernel knob
// such as FLOE_GEMV_SERIAL=0), in child processes that alternate round by round (ABBA), so that a host whose speed drifts
// hits both alike. Each child loads the model, decodes --tokens greedy tokens after a 32-token prompt --reps times and
// reports its best tok/s; the parent prints every round and the median ratio.
//
//   node --import tsx bench/decode-ab.ts --model FILE_OR_DIR --ab ENV=VAL[,ENV2=VAL2...] [--rounds 4] [--reps 7] [--tokens 256]
//                                        [--threads 2] [--out FILE]
// "old" is the run with the settings, "new" the run without them. Writes bench/results/decode-ab-<model>-<ENV>.json
// (or --out).

import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { machineInfo, machineLine } from './machine.js';

const HERE = fileURLToPath(import.meta.url);
const arg = (name: string, dflt?: string): string => {
  const i = process.argv.indexOf(`--${name}`);
  if (i >= 0 && process.argv[i + 1] !== undefined) return process.argv[i + 1]!;
  if (dflt === undefined) throw new Error(`decode-ab: --${name} is required`);
  return dflt;
};
const model = arg('model'), threads = Number(arg('threads', '2')), reps = Number(arg('reps', '7')), tokens = Number(arg('tokens', '256'));

if (process.argv.includes('--child')) {
  // the model code only in the child: the parent loads no model (only the addon, for the host line of machine.ts)
  const { generate } = await import('../src/model/generate.js');
  const { openModel } = await import('../src/model/open.js');
  const m = await openModel(model, { backend: 'native', threads });
  const V = m.model.config.vocabSize;
  const prompt = Array.from({ length: 32 }, (_, i) => (i * 7919 + 13) % Math.min(V, 1000) + 3);
  let best = 0;
  for (let r = 0; r < reps; r++) {
    const res = generate(m.model, prompt, { maxTokens: tokens, sampling: { temperature: 0 }, stopTokenIds: [] });
    best = Math.max(best, res.outputIds.length / (res.timings.decodeMs / 1000));
  }
  process.stdout.write(`${JSON.stringify({ tps: best })}\n`);
} else {
  // --ab ENV=VAL[,ENV2=VAL2...]: the old side sets all of them
  const ab = arg('ab');
  const settings = ab.split(',').map((kv) => {
    const eq = kv.indexOf('=');
    if (eq <= 0) throw new Error(`decode-ab: --ab wants ENV=VAL[,ENV=VAL...], got ${ab}`);
    return [kv.slice(0, eq), kv.slice(eq + 1)] as const;
  });
  const envName = settings.map(([k]) => k).join('+');
  const oldEnv = Object.fromEntries(settings);
  const rounds = Number(arg('rounds', '4'));
  console.log(`machine: ${machineLine(machineInfo())}`);
  console.log(`${path.basename(model)}: decode tok/s (best of ${reps} × ${tokens} tokens, ${threads} threads); old = ${ab}, new = without it`);
  const child = (env: NodeJS.ProcessEnv): number => {
    const r = spawnSync(process.execPath, ['--import', 'tsx', HERE, '--child', ...process.argv.slice(2)], { env, encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`decode-ab child failed (${r.status}): ${r.stderr}`);
    return (JSON.parse(r.stdout.trim().split('\n').pop()!) as { tps: number }).tps;
  };
  const rows: { old: number; new: number; ratio: number }[] = [];
  for (let i = 0; i < rounds; i++) {
    const base = { ...process.env };
    for (const [k] of settings) delete base[k];
    // ABBA: which of the two runs first alternates (a first child has measured up to 30% slower on this host)
    let o = 0, n = 0;
    if (i % 2 === 0) o = child({ ...base, ...oldEnv }), n = child(base);
    else n = child(base), o = child({ ...base, ...oldEnv });
    rows.push({ old: o, new: n, ratio: n / o });
    console.log(`round ${i + 1}: old ${o.toFixed(1)}  new ${n.toFixed(1)}  new/old ${(n / o).toFixed(3)}`);
  }
  const ratios = rows.map((r) => r.ratio).sort((a, b) => a - b);
  const median = ratios[Math.floor((ratios.length - 1) / 2)]!;
  console.log(`median new/old ${median.toFixed(3)} (range ${ratios[0]!.toFixed(3)}-${ratios[ratios.length - 1]!.toFixed(3)})`);
  const out = process.argv.includes('--out') ? arg('out')
    : path.join(path.dirname(HERE), 'results', `decode-ab-${path.basename(model).replace(/[^\w.-]/g, '_')}-${envName}.json`);
  fs.writeFileSync(out, `${JSON.stringify({ machine: machineInfo(), model, ab, threads, reps, tokens, rounds: rows, median }, null, 1)}\n`);
  console.log(`-> ${path.relative(process.cwd(), out)}`);
}
