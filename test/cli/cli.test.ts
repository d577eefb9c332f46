// The `floe` command as a user runs it: a subprocess, checked against the PyTorch fixtures, the library and its help.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { linkSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadTokenizer } from '../../src/formats/tokenizer.js';
import { readGguf } from '../../src/formats/gguf.js';
import { tokenizerFromGguf } from '../../src/formats/gguf-tokenizer.js';
import { loadAddon } from '../../src/backend/native-addon.js';
import { runEach } from './run-each.js';
import { repoPath } from '../repo.js';

const BIN = repoPath('bin/floe.js');
const FIX = repoPath('test/fixtures/models/');

/** spawnSync's result fields, without blocking the event loop (stdin closed at once; killed after 30 s). */
function spawnAsync(cmd: string, argv: string[]): Promise<{ status: number | null; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, argv, { stdio: ['ignore', 'ignore', 'pipe'], timeout: 30_000 });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (d: string) => { stderr += d; });
    child.on('error', reject);
    child.on('close', (status) => resolve({ status, stderr }));
  });
}

function floe(...args: string[]) {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 60_000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

test('floe generate --json: greedy ids and prompt logprobs match PyTorch', () => {
  const ref = JSON.parse(readFileSync(FIX + 'gqa_f32/reference.json', 'utf8'));
  const r = floe('generate', '--model', FIX + 'gqa_f32', '--prompt-ids', ref.prompt_ids.join(','), '--max-tokens', String(ref.greedy_ids.length),
    '--temperature', '0', '--logprobs', '3', '--prompt-logprobs', '2', '--json');
  assert.equal(r.code, 0, r.err);
  const lines = r.out.trim().split('\n');
  assert.equal(lines.length, 1, 'exactly one JSON object');
  const j = JSON.parse(lines[0]!);
  assert.deepEqual(j.prompt_ids, ref.prompt_ids);
  assert.deepEqual(j.output_ids.slice(0, ref.greedy_ids.length), ref.greedy_ids.slice(0, j.output_ids.length));
  assert.equal(j.prompt_logprobs[0], null);
  assert.equal(j.prompt_logprobs.length, ref.prompt_ids.length);
  for (let i = 1; i < ref.prompt_ids.length; i++) {
    const e = j.prompt_logprobs[i];
    assert.equal(e.token, ref.prompt_ids[i]);
    const want = ref.logprobs[ref.logprob_positions.indexOf(i - 1)][ref.prompt_ids[i]];
    assert.ok(Math.abs(e.logprob - want) < 1e-4, `prompt logprob ${i}: ${e.logprob} vs ${want}`);
    assert.equal(e.top.length, 2);
    assert.ok(e.top[0][1] >= e.top[1][1]);
  }
  assert.equal(j.logprobs.length, j.output_ids.length);
  for (const [i, e] of j.logprobs.entries()) {
    assert.equal(e.token, j.output_ids[i]);
    assert.equal(e.top[0][0], e.token, 'greedy picks the top token');
    assert.equal(e.top.length, 3);
  }
  for (const k of ['load_ms', 'prompt_tokens', 'prompt_ms', 'generated_tokens', 'decode_ms']) assert.equal(typeof j.timings[k], 'number', k);
  assert.equal(j.timings.prompt_tokens, ref.prompt_ids.length);
});

test('floe generate: same seed, same sample; reference backend agrees with native', () => {
  const args = ['generate', '--model', FIX + 'mha_f32', '--prompt-ids', '5,6,7', '--max-tokens', '12', '--temperature', '1.0', '--top-p', '0.9', '--seed', '42', '--json'];
  const a = JSON.parse(floe(...args).out);
  const b = JSON.parse(floe(...args).out);
  const c = JSON.parse(floe(...args, '--backend', 'reference').out);
  assert.deepEqual(a.output_ids, b.output_ids);
  assert.deepEqual(a.output_ids, c.output_ids);
  const d = JSON.parse(floe(...args.slice(0, -3), '--seed', '43', '--json').out);
  assert.notDeepEqual(a.output_ids, d.output_ids, 'another seed gives another sample');
});

test('floe info prints the architecture', () => {
  const r = floe('info', FIX + 'fp8_block', '--json');
  assert.equal(r.code, 0, r.err);
  const j = JSON.parse(r.out);
  assert.equal(j.config.numLayers, 2);
  assert.ok(j.dtypes.fp8_e4m3 > 0);
  assert.ok(j.parameters > 0);
  // the host's kernels, as the addon reports them (ISA, AMX and why not)
  const addon = loadAddon();
  if (addon) {
    assert.deepEqual(j.kernels, { backend: 'native', isa: addon.isa(), supported_isa: addon.supportedIsa(), threads: j.kernels.threads, amx: addon.amx() });
    const text = floe('info', FIX + 'fp8_block');
    assert.match(text.out, new RegExp(`^kernels +native ${addon.isa()}.*${addon.amx().active ? 'AMX tiles' : addon.amx().supported ? 'AMX off' : 'no AMX: '}`, 'm'));
  } else {
    assert.equal(j.kernels.backend, 'reference');
  }
});

const avx512 = loadAddon()?.supportedIsa() === 'avx512';
test('floe info says when prefill attention runs on AMX tiles (emulated where the host has none)', { skip: avx512 ? false : 'needs the AVX-512 native addon' }, () => {
  const tiles = loadAddon()!.amx().supported;
  const info = (attn: string): string => {
    const env = { ...process.env, FLOE_AMX: tiles ? '1' : 'emulate', FLOE_AMX_ATTN: attn };
    const r = spawnSync(process.execPath, [BIN, 'info', FIX + 'fp8_block'], { encoding: 'utf8', timeout: 60_000, env });
    assert.equal(r.status, 0, r.stderr);
    return r.stdout;
  };
  assert.match(info('1'), /^kernels +native avx512.*AMX (tiles|emulated): bf16 \/ fp8 GEMMs.*, prefill attention$/m);
  assert.doesNotMatch(info('0'), /prefill attention/);
});

test('floe rejects bad input with a clear message', () => {
  const cases: [string[], RegExp][] = [
    [['generate'], /exactly one of --prompt/],
    [['generate', '--model', FIX + 'gqa_f32'], /exactly one of --prompt/],
    [['generate', '--model', FIX + 'gqa_f32', '--prompt-ids', '1,x'], /entry 1 'x' is not an integer/],
    [['generate', '--model', FIX + 'gqa_f32', '--prompt-ids', '1,99999'], /99999 outside the vocabulary/],
    [['generate', '--model', FIX + 'gqa_f32', '--prompt-ids', '1', '--max-tokens', '1000000'], /exceeds the model's context/],
    [['generate', '--model', FIX + 'gqa_f32', '--prompt-ids', '1', '--temperature', 'hot'], /--temperature expects a number/],
    [['generate', '--model', FIX + 'gqa_f32', '--prompt-ids', '1', '--kv-cache-dtype', 'f8'], /--kv-cache-dtype expects/],
    [['generate', '--model', '/nonexistent/model', '--prompt-ids', '1'], /nonexistent/],
    [['info', 'a', 'b'], /usage: floe info \[MODEL\]/],
    [['frobnicate'], /unknown command/],
  ];
  // run() calls of the built CLI in one process (./run-each.ts), not a process each
  runEach(cases.map(([args]) => args)).forEach((r, i) => {
    const [args, re] = cases[i]!;
    assert.notEqual(r.status, 0, args.join(' '));
    assert.match(r.stderr, re, args.join(' '));
    assert.doesNotMatch(r.stderr, /^\s+at /m, 'no stack trace');
  });
});

// ---------------------------------------------------------------- first run: defaults, help, flags, errors

const ROOT = repoPath('');
const BROWN = join(ROOT, 'models', 'floe-brown');

function floeIn(cwd: string, args: string[], input?: string) {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 60_000, cwd, input });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

test('floe --version prints the package version', () => {
  const r = floe('--version');
  assert.equal(r.code, 0, r.err);
  assert.equal(r.out.trim(), `floe ${JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).version}`);
});

test('floe COMMAND --help prints that command\'s usage and options only', () => {
  const own: Record<string, [RegExp, RegExp | null]> = {
    info: [/^Usage: floe info/, /--top-k/], generate: [/--top-k K/, /--lora-rank/], chat: [/--system TEXT/, /--lora-rank/],
    serve: [/--port N/, /--top-k/], finetune: [/--lora-rank R[\s\S]*--overwrite/, /--top-k/], merge: [/--adapter DIR/, /--top-k/],
    quantize: [/--per-row/, /--top-k/], eval: [/--max-seq-len N/, /--lora-rank/], tokenize: [/TEXT/, /--top-k/],
    detokenize: [/IDS/, /--top-k/], tokenizer: [/--vocab-size N/, /--top-k/],
  };
  const helps = runEach(Object.keys(own).map((cmd) => [cmd, '--help'])); // in one process (./run-each.ts)
  for (const [i, [cmd, [has, hasNot]]] of Object.entries(own).entries()) {
    const r = helps[i]!;
    assert.equal(r.status, 0, `${cmd}: ${r.stderr}`);
    assert.match(r.stdout, new RegExp(`^Usage: floe ${cmd}`), cmd);
    assert.match(r.stdout, has, cmd);
    if (hasNot) assert.doesNotMatch(r.stdout, hasNot, cmd);
  }
});

test('without --model the built-in floe-brown is used, found from the package, not the cwd', () => {
  const elsewhere = mkdtempSync(join(tmpdir(), 'floe-cwd-'));
  const r = floeIn(elsewhere, ['info', '--json']);
  assert.equal(r.code, 0, r.err);
  assert.equal(JSON.parse(r.out).path, BROWN);
  assert.match(r.err, /no --model given, using the built-in model .*models\/floe-brown/);
  const g = floeIn(elsewhere, ['generate', '--prompt', 'The', '--max-tokens', '3', '--temperature', '0', '--json']);
  assert.equal(g.code, 0, g.err);
  assert.equal(JSON.parse(g.out).output_ids.length, 3);
});

test('eval and finetune without --model use the built-in model too', () => {
  const dir = mkdtempSync(join(tmpdir(), 'floe-builtin-'));
  const data = join(dir, 'd.jsonl');
  writeFileSync(data, ['The old man went down to the river.', 'She said that the house was empty.'].map((text) => JSON.stringify({ text })).join('\n') + '\n');
  const e = floeIn(dir, ['eval', '--data', data, '--json']);
  assert.equal(e.code, 0, e.err);
  assert.equal(JSON.parse(e.out).model, BROWN);
  assert.ok(JSON.parse(e.out).tokens > 10);
  const f = floeIn(dir, ['finetune', '--data', data, '--out', join(dir, 'run'), '--max-steps', '1', '--lora-rank', '2', '--lora-targets', 'q', '--quiet', '--json']);
  assert.equal(f.code, 0, f.err);
  assert.match(f.err, /finetune: no --model given, using the built-in model/);
  assert.equal(JSON.parse(readFileSync(join(dir, 'run', 'final', 'adapter_config.json'), 'utf8')).base_model_name_or_path, BROWN);
});

test('--prompt - reads stdin; tokenize and detokenize agree with the library tokenizer', async () => {
  const tok = (await loadTokenizer(BROWN))!;
  const words = ['the', 'old', 'man', 'river', 'said', 'quietly', 'house', 'of', 'morning', 'she'];
  const text = Array.from({ length: 6 }, () => words[Math.floor(Math.random() * words.length)]).join(' ');
  const ids = tok.encode(text);
  const g = floeIn(ROOT, ['generate', '--prompt', '-', '--max-tokens', '2', '--temperature', '0', '--json'], text + '\n');
  assert.equal(g.code, 0, g.err);
  assert.deepEqual(JSON.parse(g.out).prompt_ids, ids, 'stdin prompt, trailing newline dropped');
  const t = floe('tokenize', text);
  assert.equal(t.code, 0, t.err);
  assert.equal(t.out.trim(), ids.join(','));
  assert.equal(floeIn(ROOT, ['tokenize', '--no-bos', '-'], text).out.trim(), tok.encode(text, { addSpecialTokens: false }).join(','));
  const d = floe('detokenize', ids.join(','), '--json');
  assert.equal(d.code, 0, d.err);
  assert.equal(JSON.parse(d.out).text, tok.decode(ids));
  assert.match(floe('detokenize', '5,-1').err, /entry 1 '-1' is not a token id/);
});

test('floe generate text continues the prompt as decoding prompt + output would (SentencePiece first-token space)', async () => {
  const spm = repoPath('test/fixtures/spm/spm-llama.gguf');
  const tok = tokenizerFromGguf((await readGguf(spm)).metadata)!;
  const r = floe('generate', '--model', spm, '--prompt', 'Hello world', '--max-tokens', '6', '--temperature', '0', '--json');
  assert.equal(r.code, 0, r.err);
  const j = JSON.parse(r.out);
  const decode = (ids: number[]) => tok.decode(ids, { skipSpecialTokens: true });
  const whole = decode([...j.prompt_ids, ...j.output_ids]);
  const head = decode(j.prompt_ids);
  assert.ok(whole.startsWith(head));
  assert.match(whole.slice(head.length), /^ /, 'the first generated piece starts a word (else this test could not tell)');
  assert.equal(j.text, whole.slice(head.length));
});

/** `--flag METAVAR` pairs of one command's help whose metavar is a number (N, K, P, … or a default like 128). */
function numericFlags(help: string): string[] {
  const TEXTUAL = new Set(['PATH', 'DIR', 'FILE', 'TEXT', 'HOST', 'KEY', 'NAME', 'LIST', 'MODEL', 'IN', 'OUT', 'BASE', 'IDS']);
  const flags = [...help.matchAll(/--([a-z][a-z-]*)[ =]([A-Z][A-Z0-9]*|\d+)(?![\w,])/g)].filter((m) => !TEXTUAL.has(m[2]!)).map((m) => m[1]!);
  return [...new Set(flags)];
}

test('every command\'s --help shows its own options section and no other command\'s', () => {
  const full = floe('--help');
  assert.equal(full.code, 0, full.err);
  const cmds = [...new Set([...full.out.matchAll(/^ {2}floe ([a-z]+)\b/gm)].map((m) => m[1]!))].filter((c) => c !== 'rag'); // rag has its own help
  const sections = [...full.out.matchAll(/^([a-z]+) options\b/gm)].map((m) => m[1]!);
  assert.ok(cmds.length >= 15 && sections.length >= 8, `${cmds.length} commands, ${sections.length} sections`);
  runEach(cmds.map((cmd) => [cmd, '--help'])).forEach((r, i) => { // in one process (./run-each.ts), not a process each
    const cmd = cmds[i]!;
    assert.equal(r.status, 0, `${cmd}: ${r.stderr}`);
    const shown = [...r.stdout.matchAll(/^([a-z]+) options\b/gm)].map((m) => m[1]!);
    assert.deepEqual(shown, sections.includes(cmd) ? [cmd] : [], `${cmd} --help shows the sections ${shown.join(', ')}`);
  });
});

test('floe embed --help names every flag its parser takes', () => {
  const src = readFileSync(repoPath('src/cli/embed.ts'), 'utf8');
  const flags = [...src.matchAll(/\b([a-z][a-z-]*|'[a-z-]+'): \{ type: '(string|boolean)'/g)].map((m) => m[1]!.replaceAll("'", ''));
  assert.ok(flags.length >= 6, `found the flags ${flags.join(', ')}`);
  const r = floe('embed', '--help');
  for (const f of flags) assert.match(r.out, new RegExp(`--${f}\\b`), `floe embed --help lists --${f}`);
});

// ~170 checks. Each one's own process (~0.5 s of Node's start-up, three at a time) took ~18 s of the suite: they run
// as `run` calls in one process (the helps they read too), and the eight named at the end as processes of their own
// as well (bin/floe.js itself).
test('every numeric flag of every command rejects a negative value before doing any work', async () => {
  const out = mkdtempSync(join(tmpdir(), 'floe-neg-'));
  const base: Record<string, string[]> = {
    generate: ['--prompt', 'x'], chat: [], serve: ['--port', '0'], eval: ['--data', join(out, 'none.jsonl')],
    finetune: ['--data', join(out, 'none.jsonl'), '--out', join(out, 'run'), '--eval-split', '0.5'],
    quantize: ['--model', join(out, 'm'), '--out', join(out, 'q'), '--fp8'], tokenizer: ['train', '--data', join(out, 'd.txt'), '--out', join(out, 't'), '--vocab-size', '300'],
  };
  const runs: Array<{ cmd: string; flag: string; argv: string[] }> = [];
  const help = runEach(Object.keys(base).map((cmd) => [cmd, '--help']));
  for (const [i, [cmd, args]] of Object.entries(base).entries()) {
    assert.equal(help[i]!.status, 0, `${cmd} --help: ${help[i]!.stderr}`);
    const flags = cmd === 'chat' ? [...numericFlags(help[i]!.stdout), 'temperature', 'top-k', 'top-p', 'min-p', 'repetition-penalty', 'seed', 'threads'] : numericFlags(help[i]!.stdout);
    assert.ok(flags.length > 0, `${cmd} has numeric flags`);
    for (const flag of flags) runs.push({ cmd, flag, argv: [...(cmd === 'tokenizer' ? ['tokenizer'] : [cmd]), ...args, `--${flag}=-1`] });
  }
  const check = ({ cmd, flag }: { cmd: string; flag: string }, r: { status: number | null; stderr: string }) => {
    assert.notEqual(r.status, 0, `${cmd} --${flag}=-1 was accepted`);
    assert.match(r.stderr, new RegExp(`--${flag}\\b`), `${cmd} --${flag}=-1: ${r.stderr}`);
    assert.doesNotMatch(r.stderr, /^\s+at /m, 'no stack trace');
  };
  const seen: string[] = [];
  runEach(runs.map((x) => x.argv)).forEach((r, i) => { check(runs[i]!, r); seen.push(`${runs[i]!.cmd} --${runs[i]!.flag}`); });
  const named = ['generate --top-k', 'generate --logprobs', 'generate --max-tokens', 'finetune --lora-rank', 'finetune --lr', 'serve --port', 'eval --max-seq-len', 'quantize --block'];
  for (const f of named) assert.ok(seen.includes(f), `${f} was found in the help and checked`);
  // the same checks as processes: bin/floe.js's exit code and stderr
  await Promise.all(runs.filter((x) => named.includes(`${x.cmd} --${x.flag}`)).map(async (x) => check(x, await spawnAsync(process.execPath, [BIN, ...x.argv]))));
});

test('out-of-range values and conflicting flags are refused with exit code 2', () => {
  const M = FIX + 'gqa_f32';
  const cases: [string[], RegExp][] = [
    [['generate', '--model', M, '--prompt-ids', '1', '--top-p', '1.5'], /--top-p expects a number > 0 and <= 1, got '1.5'/],
    [['generate', '--model', M, '--prompt-ids', '1', '--top-k', '2.5'], /--top-k expects an integer >= 0/],
    [['generate', '--model', M, '--prompt-ids', '1', '--repetition-penalty', '0'], /--repetition-penalty expects a number > 0/],
    [['generate', '--model', M, '--prompt-ids', '1', '--threads', '0'], /--threads expects an integer >= 1/],
    [['generate', '--model', M, '--prompt-ids', '1', '--no-bos'], /give one of --prompt-ids or --no-bos/],
    [['generate', '--model', M, '--prompt-ids', '1', '--prompt', 'x'], /exactly one of --prompt/],
    [['finetune', '--data', 'd.jsonl', '--out', 'o', '--batch-size', '2', '--batch-tokens', '64'], /give one of --batch-size or --batch-tokens/],
    [['finetune', '--data', 'd.jsonl', '--out', 'o', '--epochs', '1', '--max-steps', '3'], /give one of --epochs or --max-steps/],
    [['finetune', '--data', 'd.jsonl', '--out', 'o', '--eval', 'e.jsonl', '--eval-split', '0.1'], /give one of --eval or --eval-split/],
    [['finetune', '--data', 'd.jsonl', '--out', 'o', '--eval-split', '1'], /--eval-split expects a number > 0 and < 1/],
    [['finetune', '--data', 'd.jsonl', '--out', 'o', '--full', '--rslora'], /--full trains every weight/],
    [['finetune', '--data', 'd.jsonl', '--out', 'o', '--save-dtype', 'bf16'], /--save-dtype sets the dtype of the --full output model/],
    [['finetune', '--data', 'd.jsonl', '--out', 'o', '--eval-steps', '5'], /--eval-steps needs --eval FILE or --eval-split F/],
    [['quantize', '--model', 'a', '--out', 'b', '--fp8', '--block', '64', '--per-row'], /one of --block B or --per-row/],
    [['generate', '--model', M, '--prompt-ids', '1', '--bogus'], /Unknown option '--bogus'/],
  ];
  // run() calls of the built CLI in one process (./run-each.ts), not a process each
  runEach(cases.map(([args]) => args)).forEach((r, i) => {
    const [args, re] = cases[i]!;
    assert.equal(r.status, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, re, args.join(' '));
  });
});

test('--json: errors are one JSON object on stdout with a non-zero exit', () => {
  const load = floe('generate', '--model', '/nonexistent/model', '--prompt-ids', '1', '--json');
  assert.equal(load.code, 1);
  assert.equal(load.err, '');
  assert.deepEqual(Object.keys(JSON.parse(load.out)), ['error']);
  assert.equal(JSON.parse(load.out).error.type, 'error');
  assert.match(JSON.parse(load.out).error.message, /\/nonexistent\/model: cannot open model/);
  for (const args of [['generate', '--top-k=-3', '--prompt', 'x', '--json'], ['info', '--bogus', '--json'], ['eval', '--json']]) {
    const r = floe(...args);
    assert.equal(r.code, 2, args.join(' '));
    const j = JSON.parse(r.out);
    assert.equal(j.error.type, 'usage_error', args.join(' '));
    assert.equal(typeof j.error.message, 'string');
  }
});

test('the default --max-tokens is clamped to the room left in the context; an explicit one must fit', () => {
  const M = FIX + 'gqa_f32';
  const context = JSON.parse(readFileSync(M + '/config.json', 'utf8')).max_position_embeddings as number;
  const prompt = Array.from({ length: context - 5 }, () => 3 + Math.floor(Math.random() * 200));
  const r = floe('generate', '--model', M, '--prompt-ids', prompt.join(','), '--temperature', '0', '--json');
  assert.equal(r.code, 0, r.err);
  const j = JSON.parse(r.out);
  const total = j.prompt_ids.length + j.output_ids.length;
  if (j.finish_reason === 'length') assert.equal(total, context);
  else assert.ok(total <= context);
  assert.match(floe('generate', '--model', M, '--prompt-ids', prompt.join(','), '--max-tokens', '6').err, /exceeds the model's context of 256/);
  const full = Array.from({ length: context }, () => 3);
  assert.match(floe('generate', '--model', M, '--prompt-ids', full.join(',')).err, /fills the model's context of 256: no room to generate/);
});

test('generation_config.json sampling values are the defaults; flags override them', () => {
  const src = FIX + 'mha_f32';
  const withGen = (gen: object) => {
    const dir = mkdtempSync(join(tmpdir(), 'floe-gencfg-'));
    for (const f of ['config.json', 'model.safetensors']) linkSync(join(src, f), join(dir, f));
    writeFileSync(join(dir, 'generation_config.json'), JSON.stringify(gen));
    return dir;
  };
  const ids = (...args: string[]) => {
    const r = floe('generate', '--prompt-ids', '5,6,7', '--max-tokens', '16', '--seed', '42', '--json', ...args);
    assert.equal(r.code, 0, r.err);
    return JSON.parse(r.out).output_ids as number[];
  };
  const sampled = withGen({ do_sample: true, temperature: 1.3, top_k: 5, top_p: 0.95 });
  const fromFile = ids('--model', sampled);
  assert.deepEqual(fromFile, ids('--model', src, '--temperature', '1.3', '--top-k', '5', '--top-p', '0.95'), 'the file\'s values were applied');
  assert.notDeepEqual(fromFile, ids('--model', src), 'and they differ from floe\'s own defaults');
  assert.deepEqual(ids('--model', sampled, '--temperature', '0.5', '--top-k', '0'), ids('--model', src, '--temperature', '0.5', '--top-p', '0.95'), 'flags override the file');
  const greedy = withGen({ do_sample: false, temperature: 0.9 });
  assert.deepEqual(ids('--model', greedy), ids('--model', src, '--temperature', '0'), 'do_sample false is greedy');
  const bad = withGen({ top_p: 1.5 });
  assert.match(floe('generate', '--model', bad, '--prompt-ids', '1').err, /generation_config\.json: "top_p" must be in \(0, 1\], got 1\.5/);
});
