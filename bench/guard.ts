// Cost of guardrails: TTFT and end-to-end latency of chat completions with the output rail on vs off, streamed and not.
//
//   node --import tsx bench/guard.ts [--model models/floe-brown] [--guard models/floe-guard] [--requests 8]
//                                    [--max-tokens 128] [--window 64] [--threads N]
// One server (main model + guard engine), requests one at a time, greedy, the same prompts in each mode. The guard
// threshold is 1 (nothing is cut), so every mode writes the same answer and the difference is the judging alone.
// TTFT (streamed) is the first content delta; with rails it waits for the first window's verdict.
// Target (issue #10): the output rail adds ≤ 25% to end-to-end latency with the built-in guard.

import { startServer } from '../src/serve/server.js';

function arg(name: string, def: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1]! : def;
}
const model = arg('model', 'models/floe-brown');
const guardModel = arg('guard', 'models/floe-guard');
const requests = Number(arg('requests', '8'));
const maxTokens = Number(arg('max-tokens', '128'));
const window = Number(arg('window', '64'));
const threads = process.argv.includes('--threads') ? Number(arg('threads', '1')) : undefined;

const PROMPTS = [
  'Tell me about the history of the river towns.', 'What did the old farmer say to the mayor?', 'Describe a quiet morning in the city.',
  'How should a young man choose his work?', 'Write about the election in the county.', 'What happened at the church on Sunday?',
  'Explain how the railroad changed the valley.', 'Tell me a story about two brothers.',
];

const server = await startServer({ model, guardModel, guardWindow: window, port: 0, ui: false, dataDir: null, maxNumSeqs: 4, threads, log: () => {} });
await server.ready;
const url = `${server.url}/v1/chat/completions`;

async function once(prompt: string, stream: boolean, rails: boolean): Promise<{ ttft: number; e2e: number; tokens: number; guardTokens: number }> {
  const body = {
    model: server.modelName, messages: [{ role: 'user', content: prompt }], max_tokens: maxTokens, temperature: 0, stream,
    ...(stream ? { stream_options: { include_usage: true } } : {}), ...(rails ? { guardrails: { threshold: 1 } } : {}),
  };
  const t0 = performance.now();
  const r = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  if (!r.ok) throw new Error(`${r.status}: ${await r.text()}`);
  if (!stream) {
    const j = (await r.json()) as { usage: { completion_tokens: number; guard?: { total_tokens: number } } };
    const e2e = performance.now() - t0;
    return { ttft: e2e, e2e, tokens: j.usage.completion_tokens, guardTokens: j.usage.guard?.total_tokens ?? 0 };
  }
  let ttft = 0;
  type Usage = { completion_tokens: number; guard?: { total_tokens: number } };
  const last: { usage: Usage | null } = { usage: null };
  const dec = new TextDecoder();
  let buf = '';
  for await (const chunk of r.body!) {
    buf += dec.decode(chunk as Uint8Array, { stream: true });
    let k;
    while ((k = buf.indexOf('\n\n')) >= 0) {
      const line = buf.slice(0, k);
      buf = buf.slice(k + 2);
      if (!line.startsWith('data: ') || line === 'data: [DONE]') continue;
      const ev = JSON.parse(line.slice(6)) as { choices: Array<{ delta?: { content?: string } }>; usage?: Usage };
      if (ttft === 0 && ev.choices[0]?.delta?.content) ttft = performance.now() - t0;
      if (ev.usage) last.usage = ev.usage;
    }
  }
  return { ttft, e2e: performance.now() - t0, tokens: last.usage?.completion_tokens ?? 0, guardTokens: last.usage?.guard?.total_tokens ?? 0 };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
await once(PROMPTS[0]!, false, true); // warm both engines
console.log(`model ${model}, guard ${guardModel}, ${requests} requests per mode, max_tokens ${maxTokens}, window ${window}`);
console.log('mode                 ttft_ms   e2e_ms  tokens  guard_tokens');
const res: Record<string, { ttft: number; e2e: number }> = {};
for (const stream of [false, true]) {
  for (const rails of [false, true]) {
    const runs = [];
    for (let i = 0; i < requests; i++) runs.push(await once(PROMPTS[i % PROMPTS.length]!, stream, rails));
    const name = `${stream ? 'stream' : 'plain'}, rails ${rails ? 'on' : 'off'}`;
    res[name] = { ttft: median(runs.map((r) => r.ttft)), e2e: median(runs.map((r) => r.e2e)) };
    console.log(`${name.padEnd(20)} ${res[name].ttft.toFixed(0).padStart(8)} ${res[name].e2e.toFixed(0).padStart(8)} ${median(runs.map((r) => r.tokens)).toString().padStart(7)} ${median(runs.map((r) => r.guardTokens)).toString().padStart(13)}`);
  }
}
for (const m of ['plain', 'stream']) {
  const off = res[`${m}, rails off`]!;
  const on = res[`${m}, rails on`]!;
  console.log(`${m}: rails add ${((on.e2e / off.e2e - 1) * 100).toFixed(1)}% end-to-end (target <= 25%), TTFT x${(on.ttft / off.ttft).toFixed(2)}`);
}
await server.close(0);
