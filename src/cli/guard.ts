// `floe guard`: judge a text or a conversation with a Llama Guard checkpoint; prints verdict, categories, P(unsafe).

import { existsSync, readFileSync } from 'node:fs';
import type { BackendName } from '../backend/select.js';
import { Guard, DEFAULT_THRESHOLD } from '../platform/guard/guard.js';
import { parseCategories, parseExclude } from '../platform/guard/policy.js';
import { GUARD_FORMATS, effectiveCategories, guardConversation, type ChatTurn, type GuardFormat, type GuardRole } from '../platform/guard/prompt.js';
import { builtinModel, conflicts, num, parse, parseSize, textOrStdin, threadsFlag, UsageError } from './args.js';

/** models/floe-guard in the package, the default guard. */
export function builtinGuard(): string {
  return builtinModel('floe-guard');
}

function readJson(path: string, flag: string): unknown {
  let text: string;
  try { text = readFileSync(path, 'utf8'); } catch (e) { throw new UsageError(`--${flag} ${path}: ${(e as Error).message}`); }
  try { return JSON.parse(text); } catch (e) { throw new UsageError(`--${flag} ${path}: invalid JSON: ${(e as Error).message}`); }
}

export async function guardCmd(args: string[]): Promise<number> {
  const str = { type: 'string' } as const;
  const { values: v } = parse(args, {
    model: str, text: str, messages: str, role: str, categories: str, exclude: str, 'guard-format': str, threshold: str,
    json: { type: 'boolean' }, 'print-prompt': { type: 'boolean' }, threads: str, backend: str, 'kv-cache-memory': str,
  });
  conflicts(v, [['text', 'messages']]);
  if (v.text === undefined && v.messages === undefined) throw new UsageError('give --text TEXT (or - for stdin) or --messages FILE.json');
  const role = (v.role ?? 'user') as GuardRole;
  if (role !== 'user' && role !== 'agent') throw new UsageError(`--role expects user or agent, got '${v.role}'`);
  const format = v['guard-format'] as GuardFormat | undefined;
  if (format !== undefined && !GUARD_FORMATS.includes(format)) throw new UsageError(`--guard-format expects ${GUARD_FORMATS.join(', ')}, got '${format}'`);
  const threshold = num(v.threshold, 'threshold', DEFAULT_THRESHOLD, false, { min: 0, max: 1 });
  const backend = v.backend as BackendName | undefined;
  if (backend !== undefined && backend !== 'native' && backend !== 'reference') throw new UsageError(`--backend expects native or reference, got '${backend}'`);
  let kvCacheMemory = 256 * 2 ** 20;
  try { if (v['kv-cache-memory'] !== undefined) kvCacheMemory = parseSize(v['kv-cache-memory']); } catch (e) { throw new UsageError(`--kv-cache-memory: ${(e as Error).message}`); }
  const threads = threadsFlag(v.threads);

  let messages: ChatTurn[];
  if (v.text !== undefined) {
    if (role === 'agent') throw new UsageError('--role agent judges an answer to a user turn: give --messages FILE.json with both');
    messages = [{ role: 'user', content: textOrStdin(v.text) }];
  } else {
    const m = readJson(v.messages!, 'messages');
    const list = Array.isArray(m) ? m : (m as { messages?: unknown } | null)?.messages;
    if (!Array.isArray(list)) throw new UsageError(`--messages ${v.messages}: expected a JSON list of {role, content} (or {"messages": [...]})`);
    messages = list as ChatTurn[];
    // a malformed conversation is the file's fault: said before the guard loads, naming the file
    try { guardConversation(messages, role); } catch (e) { throw new UsageError(`--messages ${v.messages}: ${(e as Error).message}`); }
  }
  let categories;
  let exclude: string[] | undefined;
  try {
    categories = v.categories === undefined ? undefined : parseCategories(readJson(v.categories, 'categories'), `--categories ${v.categories}`);
    exclude = v.exclude === undefined ? undefined : parseExclude(v.exclude, '--exclude');
    if (exclude?.length === 0) throw new UsageError(`--exclude expects category codes such as S6,S7, got '${v.exclude}'`);
  } catch (e) {
    throw e instanceof UsageError ? e : new UsageError((e as Error).message);
  }

  let model = v.model;
  if (model === undefined) {
    model = builtinGuard();
    if (!existsSync(model)) throw new UsageError(`--model GUARD is required (the built-in guard ${model} is missing)`);
    process.stderr.write(`[floe] guard: no --model given, using the built-in guard ${model}\n`);
  }
  const guard = await Guard.open(model, { format, backend, threads, kvCacheMemory, maxNumSeqs: 2 });
  try {
    // check the policy and the conversation before the model runs
    // the default policy is known once the guard's format is: an --exclude code it lacks is the command line's mistake
    let cats;
    try { cats = effectiveCategories({ format: guard.format, categories, exclude }); } catch (e) { throw new UsageError(`--exclude ${v.exclude}: ${(e as Error).message.replace(/^guard: /, '')}`); }
    if (cats.length === 0) throw new UsageError(`--exclude ${v.exclude} leaves no category in the policy: the guard would have nothing to judge against`);
    const prompt = guard.prompt(messages, { role, categories, exclude });
    if (v['print-prompt'] && !v.json) process.stdout.write(`--- prompt (${guard.format}) ---\n${prompt}\n--- end of prompt ---\n`);
    const r = await guard.judge(messages, { role, categories, exclude, threshold });
    if (v.json) {
      process.stdout.write(JSON.stringify({
        flagged: r.flagged, verdict: r.verdict, categories: r.categories, unsafe_probability: r.unsafeProbability, threshold,
        format: guard.format, role, output: r.output, usage: { prompt_tokens: r.usage.promptTokens, completion_tokens: r.usage.completionTokens },
        ...(v['print-prompt'] ? { prompt } : {}),
      }) + '\n');
      return 0;
    }
    const named = r.categories.map((c) => `${c} (${cats.find((x) => x.code === c)?.name.trim().replace(/\.$/, '') ?? '?'})`).join(', ');
    process.stdout.write([
      `verdict             ${r.flagged ? 'unsafe' : 'safe'}${r.flagged !== (r.verdict === 'unsafe') ? ` (the guard wrote '${r.verdict}'; the threshold decides)` : ''}`,
      `categories          ${named || '-'}`,
      `unsafe probability  ${r.unsafeProbability.toFixed(4)} (threshold ${threshold})`,
    ].join('\n') + '\n');
    return 0;
  } finally {
    await guard.close();
  }
}
