// Predicted Outputs end to end: tokens/s of /v1/completions (a real server started without --speculative, the
// official openai client) with a prediction that is (a) the model's own greedy answer, (b) that answer with 1 word
// in 10 replaced, (c) unrelated text, against no prediction, on the built-in model (floe-brown).
//
// usage: node --import tsx bench/prediction.ts [--prompts 4] [--reps 3] [--max-tokens 128] [--threads 2] [--speculative ngram]
//                                             [--model DIR|FILE.gguf] (default models/floe-brown; e.g. bench/.cache/1b-q8_0-v2.gguf)
// Each prompt runs every variant in turn, reps times; a variant's figure is the median over its requests of
// completion tokens / wall time of the request, and its ratio is against no prediction in the same run.

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import OpenAI from 'openai';
import { readGguf } from '../src/formats/gguf.js';
import { startServer } from '../src/serve/server.js';
import { loadBrown, splitBrown } from '../src/train/corpus.js';
import { machineInfo, machineLine } from './machine.js';

const ROOT = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const arg = (name: string, dflt: string): string => { const i = process.argv.indexOf(name); return i >= 0 ? process.argv[i + 1]! : dflt; };
const numPrompts = Number(arg('--prompts', '4'));
const reps = Number(arg('--reps', '3'));
const maxTokens = Number(arg('--max-tokens', '128'));
const threads = Number(arg('--threads', String(Math.min(2, os.availableParallelism()))));
const speculative = arg('--speculative', '') || undefined;
const modelPath = path.resolve(arg('--model', path.join(ROOT, 'models', 'floe-brown')));

const median = (xs: number[]): number => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)]!; };

async function main(): Promise<void> {
  console.log(`machine: ${machineLine(machineInfo())}; load average ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}`);
  const g = modelPath.endsWith('.gguf') ? await readGguf(modelPath) : null;
  const srv = await startServer({ model: modelPath, port: 0, threads, log: () => {}, ui: false, speculative });
  await srv.ready;
  const client = new OpenAI({ baseURL: srv.url + '/v1', apiKey: 'none', maxRetries: 0 });
  const steps = async (): Promise<number> => Number(/^floe_engine_steps_total (\S+)$/m.exec(await (await fetch(srv.url + '/metrics')).text())![1]);
  const held = splitBrown(loadBrown()).heldOut;
  const prompts = Array.from({ length: numPrompts }, (_, i) => held[(11 + 37 * i) % held.length]!.slice(0, 300));
  // EOS banned rather than ignored: text with end-of-text tokens inside would not come back from the API's text
  const eosIds = modelPath.endsWith('.gguf')
    ? ['tokenizer.ggml.eos_token_id', 'tokenizer.ggml.eot_token_id', 'tokenizer.ggml.eom_token_id'].map((k) => (g!.metadata.get(k) as number | undefined)).filter((id) => id !== undefined)
    : [(JSON.parse(fs.readFileSync(path.join(modelPath, 'config.json'), 'utf8')) as { eos_token_id: number | number[] }).eos_token_id].flat();
  const eos = Object.fromEntries(eosIds.map((id) => [String(id), -100]));
  const body = (prompt: string) => ({ model: srv.modelName, prompt, temperature: 0, max_tokens: maxTokens, logit_bias: eos });
  let seed = 7;
  const rnd = (): number => { seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0; return seed / 2 ** 32; };
  const words = held.join(' ').split(/\s+/).slice(0, 5000);

  type Variant = 'none' | '(a) own answer' | '(b) 1 word in 10 edited' | '(c) unrelated';
  const rows = new Map<Variant, { tps: number[]; steps: number; tokens: number; accepted: number; rejected: number }>();
  for (const [pi, prompt] of prompts.entries()) {
    const answer = (await client.completions.create(body(prompt) as OpenAI.CompletionCreateParamsNonStreaming)).choices[0]!.text;
    const variants: Record<Variant, string | null> = {
      none: null,
      '(a) own answer': answer,
      '(b) 1 word in 10 edited': answer.split(' ').map((w) => (rnd() < 0.1 ? words[Math.floor(rnd() * words.length)]! : w)).join(' '),
      '(c) unrelated': held[(pi * 53 + 200) % held.length]!.slice(0, answer.length),
    };
    for (let r = 0; r < reps; r++) {
      for (const [name, prediction] of Object.entries(variants) as [Variant, string | null][]) {
        const s0 = await steps();
        const t0 = performance.now();
        const res = await client.completions.create({ ...body(prompt), ...(prediction === null ? {} : { prediction: { type: 'content', content: prediction } }) } as OpenAI.CompletionCreateParamsNonStreaming);
        const ms = performance.now() - t0;
        const row = rows.get(name) ?? { tps: [], steps: 0, tokens: 0, accepted: 0, rejected: 0 };
        const u = res.usage!;
        row.tps.push(u.completion_tokens / (ms / 1000));
        row.steps += (await steps()) - s0;
        row.tokens += u.completion_tokens;
        row.accepted += u.completion_tokens_details?.accepted_prediction_tokens ?? 0;
        row.rejected += u.completion_tokens_details?.rejected_prediction_tokens ?? 0;
        rows.set(name, row);
      }
    }
  }
  await srv.close(1000);
  const base = median(rows.get('none')!.tps);
  console.log(`${path.basename(modelPath)}, /v1/completions, ${numPrompts} prompts × ${reps} reps, ${maxTokens} tokens each, ${threads} threads, --speculative ${speculative ?? 'off'}`);
  console.log('prediction                  tok/s   × none  tokens/step  accepted  rejected (per request)');
  for (const [name, r] of rows) {
    const n = r.tps.length;
    const m = median(r.tps);
    console.log(`${name.padEnd(26)} ${m.toFixed(0).padStart(6)}  ${(m / base).toFixed(2).padStart(6)}  ${(r.tokens / r.steps).toFixed(2).padStart(11)}  ${(r.accepted / n).toFixed(1).padStart(8)}  ${(r.rejected / n).toFixed(1).padStart(8)}`);
  }
}

await main();
