// A chat request's prompt ids: its messages through the model's chat template with the request's template options,
// one function so that /tokenize counts exactly what /v1/chat/completions (and /v1/responses) send the engine.

import { encodeChat, FinalMessageError, type ChatMessage, type ChatTemplate } from '../formats/chat-template.js';
import { invalid } from './errors.js';
import type { ServeTokenizer } from './token-text.js';
import type { ChatParams, ToolDef } from './validate.js';

/**
 * `messages` (the request's, or with RAG passages added) rendered and encoded; a template's refusal is a 400 naming
 * `param`, a final message continue_final_message cannot find in the rendering a 400 naming that field.
 */
export function encodeChatRequest(tokenizer: ServeTokenizer, template: ChatTemplate, messages: readonly ChatMessage[], p: ChatParams,
  tools: readonly ToolDef[] | undefined, param: string): number[] {
  try {
    return encodeChat(tokenizer, template, messages, {
      addGenerationPrompt: p.addGenerationPrompt, continueFinalMessage: p.continueFinalMessage, tools, extra: p.chatTemplateKwargs ?? undefined,
    });
  } catch (e) {
    if (e instanceof FinalMessageError) throw invalid('continue_final_message', e.message);
    throw invalid(param, `the chat template rejected the messages: ${(e as Error).message}`);
  }
}
