// vLLM's tokenizer endpoints: POST /tokenize (a prompt, or chat messages through the chat template) and POST
// /detokenize, plus GET /version. Clients use them to count tokens against max_model_len without generating.

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { packageRoot } from '../model/builtin.js';
import { encodeChatRequest } from './chat-prompt.js';
import { invalid } from './errors.js';
import type { ModelContext } from './app.js';
import { bodyObject, checkModel, optBool, parseChatRequest, type ValidationContext } from './validate.js';

export interface TokenizeRouteOptions {
  readonly model: () => ModelContext;
  readonly vctx: (c: ModelContext) => ValidationContext;
}

/** Routes outside /v1 that still need the API key and a loaded model (vLLM serves them at the root). */
export const TOKENIZE_ROUTES: ReadonlySet<string> = new Set(['/tokenize', '/detokenize']);

const TOKENIZE_PROMPT_KEYS = new Set(['model', 'prompt', 'add_special_tokens', 'return_token_strs']);
const TOKENIZE_CHAT_KEYS = new Set(['model', 'messages', 'add_generation_prompt', 'continue_final_message', 'chat_template_kwargs', 'add_special_tokens', 'return_token_strs', 'tools']);
/** The chat keys read as /v1/chat/completions reads them. */
const CHAT_REQUEST_KEYS = ['messages', 'tools', 'add_generation_prompt', 'continue_final_message', 'chat_template_kwargs'] as const;

const TOKENIZE_KEYS = new Set([...TOKENIZE_PROMPT_KEYS, ...TOKENIZE_CHAT_KEYS]);
const DETOKENIZE_KEYS = new Set(['model', 'tokens']);

/** floe's package version (GET /version; part of the completions' system_fingerprint). */
export const FLOE_VERSION = (JSON.parse(readFileSync(join(packageRoot(), 'package.json'), 'utf8')) as { version: string }).version;

export function registerTokenizeRoutes(app: FastifyInstance, o: TokenizeRouteOptions): void {
  app.get('/version', async () => ({ version: FLOE_VERSION }));

  app.post('/tokenize', async (req) => {
    const b = bodyObject(req.body, TOKENIZE_KEYS); // then the keys of its kind, below
    const c = o.model();
    checkModel(b, o.vctx(c));
    const chat = b.messages !== undefined;
    if (chat && b.prompt !== undefined) throw invalid('messages', "give one of 'prompt' (text) or 'messages' (a chat), not both");
    if (!chat && b.prompt === undefined) throw invalid('prompt', "'prompt' (text) or 'messages' (a chat) is required", 'missing_required_parameter');
    const allowed = chat ? TOKENIZE_CHAT_KEYS : TOKENIZE_PROMPT_KEYS;
    for (const k of Object.keys(b)) if (!allowed.has(k)) throw invalid(k, `unrecognized argument '${k}'${chat ? ' with messages' : ' with prompt'}`, 'unknown_parameter');
    if (!c.tokenizer) throw invalid(chat ? 'messages' : 'prompt', 'this model has no tokenizer');
    const strs = optBool(b, 'return_token_strs', false);
    let tokens: number[];
    if (chat) {
      if (!c.template) throw invalid('messages', 'this model has no chat template (tokenizer_config.json chat_template or chat_template.jinja)');
      if (optBool(b, 'add_special_tokens', false)) throw invalid('add_special_tokens', "'add_special_tokens' with messages would add a second BOS to the template's; it is not supported", 'unsupported_parameter');
      // the messages, tools and template options are read and encoded exactly as /v1/chat/completions reads them (a
      // template's raise_exception is a 400 naming 'messages' there too)
      const given = Object.fromEntries(CHAT_REQUEST_KEYS.filter((k) => b[k] !== undefined).map((k) => [k, b[k]]));
      const p = parseChatRequest({ ...given, model: b.model ?? o.vctx(c).modelName }, o.vctx(c));
      tokens = encodeChatRequest(c.tokenizer, c.template, p.messages, p, p.tools.length ? p.tools : undefined, 'messages');
    } else {
      if (typeof b.prompt !== 'string') throw invalid('prompt', `'prompt' must be a string, got ${Array.isArray(b.prompt) ? 'an array' : typeof b.prompt}`, 'invalid_type');
      tokens = c.tokenizer.encode(b.prompt, { addSpecialTokens: optBool(b, 'add_special_tokens', true) });
    }
    return {
      count: tokens.length, max_model_len: c.engine.info.maxModelLen, tokens,
      token_strs: strs ? tokens.map((t) => c.tokenizer!.idToToken(t) ?? null) : null, // vocabulary strings, as vLLM's convert_ids_to_tokens
    };
  });

  app.post('/detokenize', async (req) => {
    const b = bodyObject(req.body, DETOKENIZE_KEYS);
    const c = o.model();
    checkModel(b, o.vctx(c));
    const t = b.tokens;
    if (!Array.isArray(t)) throw invalid('tokens', `'tokens' must be an array of token ids, got ${t === undefined ? 'nothing' : typeof t}`, t === undefined ? 'missing_required_parameter' : 'invalid_type');
    const V = c.engine.info.vocabSize;
    t.forEach((id, i) => {
      if (!Number.isSafeInteger(id) || (id as number) < 0 || (id as number) >= V) throw invalid(`tokens[${i}]`, `'tokens[${i}]' must be a token id in [0, ${V}), got ${JSON.stringify(id)}`);
    });
    if (!c.tokenizer) throw invalid('tokens', 'this model has no tokenizer');
    return { prompt: c.tokenizer.decode(t as number[], { skipSpecialTokens: false }) };
  });
}
