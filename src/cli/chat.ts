// `floe chat`: an interactive conversation on stdin (like `ollama run`), rendered with the model's chat template.

import { createInterface } from 'node:readline';
import { statSync } from 'node:fs';
import type { BackendName } from '../backend/select.js';
import { ChatTemplate, encodeChat, loadChatTemplate, type ChatMessage } from '../formats/chat-template.js';
import { defaultKvDtype, generate } from '../model/generate.js';
import { openModel } from '../model/open.js';
import { TextStream } from '../model/text-stream.js';
import { kvCacheDtype, loadDtype, modelOrBuiltin, optNum, parse, samplingFlags, threadsFlag, UsageError, withGenerationDefaults } from './args.js';

export async function chatCmd(args: string[]): Promise<number> {
  const str = { type: 'string' } as const;
  const { values: v } = parse(args, {
    model: str, system: str, 'max-tokens': str, temperature: str, 'top-k': str, 'top-p': str, 'min-p': str,
    'repetition-penalty': str, seed: str, threads: str, backend: str, 'kv-cache-dtype': str, dtype: str, adapter: str,
  });
  const sampling = samplingFlags(v);
  const maxTokens = optNum(v['max-tokens'], 'max-tokens', true, { min: 1 });
  const threads = threadsFlag(v.threads);
  const backend = v.backend as BackendName | undefined;
  if (backend !== undefined && backend !== 'native' && backend !== 'reference') throw new UsageError(`--backend expects native or reference, got '${backend}'`);
  const kvDtype = kvCacheDtype(v['kv-cache-dtype']);
  const modelPath = modelOrBuiltin(v.model, 'chat');

  const opened = await openModel(modelPath, { backend, threads, load: loadDtype(v.dtype) });
  const { tokenizer } = opened;
  if (!tokenizer) throw new Error(`${modelPath} has no tokenizer: chat needs one (use floe generate --prompt-ids)`);
  const template = statSync(modelPath).isDirectory()
    ? await loadChatTemplate(modelPath)
    : typeof opened.loaded.ggufMetadata?.get('tokenizer.chat_template') === 'string'
      ? new ChatTemplate(opened.loaded.ggufMetadata.get('tokenizer.chat_template') as string, `${modelPath}: tokenizer.chat_template`)
      : null;
  if (!template) throw new Error(`${modelPath} has no chat template (chat_template.jinja or tokenizer_config.json chat_template): use floe generate`);
  const model = v.adapter === undefined ? opened.model : (await import('../model/adapter.js')).applyAdapter(opened.model, v.adapter);
  const eos = [...new Set([...model.config.eosTokenIds, ...tokenizer.eosIds])];
  const context = model.config.maxPositionEmbeddings;
  const params = withGenerationDefaults(sampling, opened.generation);

  const tty = !!process.stdin.isTTY;
  if (tty) process.stderr.write(`[floe] chatting with ${modelPath}; /bye or Ctrl-D ends\n`);
  const system: ChatMessage[] = v.system === undefined ? [] : [{ role: 'system', content: v.system }];
  const turns: ChatMessage[] = []; // user, assistant, user, assistant, …
  const rl = createInterface({ input: process.stdin, terminal: false });
  const prompt = () => { if (tty) process.stdout.write('>>> '); };
  prompt();
  for await (const line of rl) {
    const text = line.trim();
    if (text === '/bye') break;
    if (text === '') { prompt(); continue; }
    turns.push({ role: 'user', content: line });
    let ids = encodeChat(tokenizer, template, [...system, ...turns], { addGenerationPrompt: true });
    // the oldest exchanges go first when the conversation outgrows the context
    while (ids.length >= context && turns.length > 2) {
      turns.splice(0, 2);
      ids = encodeChat(tokenizer, template, [...system, ...turns], { addGenerationPrompt: true });
    }
    if (ids.length >= context) {
      process.stderr.write(`[floe] chat: this message is ${ids.length} tokens with the template, the context holds ${context}; not sent\n`);
      turns.pop();
      prompt();
      continue;
    }
    const room = context - ids.length;
    const res = generate(model, ids, {
      maxTokens: Math.min(maxTokens ?? opened.generation.maxNewTokens ?? room, room),
      sampling: params,
      stopTokenIds: eos,
      kvDtype: kvDtype ?? defaultKvDtype(model),
      text: new TextStream(tokenizer, [], { promptIds: ids }), // the prompt as decoder context, as the server does
      onToken: (_id, t) => { if (t) process.stdout.write(t); },
    });
    process.stdout.write('\n');
    turns.push({ role: 'assistant', content: res.text });
    prompt();
  }
  rl.close();
  opened.loaded.dispose();
  return 0;
}
