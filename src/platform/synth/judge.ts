// Judge: the model rates a sample on a rubric (prompt file judge/rubric.txt); the answer is parsed strictly.

import type { SynthLlm } from './llm.js';
import type { PromptSet } from './prompts.js';

/** "Score: N" (N in 1..5) as the first non-empty line, nothing else on it; anything else is null (unparsed). */
export function parseScore(text: string): number | null {
  const first = text.split('\n').map((l) => l.trim()).find((l) => l.length > 0) ?? '';
  const m = /^Score:\s*([1-5])\s*(?:\/\s*5)?\.?$/.exec(first);
  return m ? Number(m[1]) : null;
}

export class Judge {
  constructor(private readonly llm: SynthLlm, private readonly prompts: PromptSet, readonly maxTokens = 64) {}
  get model(): string { return this.llm.name; }

  /** Greedy, so the same sample always gets the same score. */
  async score(instruction: string, response: string): Promise<{ score: number | null; raw: string; tokens: number }> {
    const g = await this.llm.chat([{ role: 'user', content: this.prompts.fill('judge', 'rubric', { instruction, response }) }], { maxTokens: this.maxTokens, temperature: 0, topP: 1, seed: 0 });
    return { score: parseScore(g.text), raw: g.text.slice(0, 200), tokens: g.completionTokens };
  }
}
