// The synth methods as work units: each unit has a deterministic id and seed, so a resumed run redoes nothing and
// reproduces exactly what an uninterrupted one would have made.

import type { ChatMessage } from '../../formats/chat-template.js';
import { mix32, Rng } from '../../train/rng.js';
import type { Chunker } from './chunk.js';
import { checkAnswer, checkText, isCopy, type TextLimits } from './filters.js';
import { DEFAULT_GROUNDING, grounding, type GroundingOptions } from './grounding.js';
import type { Gen, GenOptions, SynthLlm } from './llm.js';
import { hashString, type LshIndex } from './minhash.js';
import type { PromptSet } from './prompts.js';

export const METHODS = ['self-instruct', 'evol-instruct', 'magpie', 'from-documents'] as const;
export type MethodName = (typeof METHODS)[number];

/** A finished candidate: a user turn and its answer, and where it came from. */
export interface Candidate {
  readonly instruction: string;
  readonly response: string;
  readonly system?: string;
  readonly source: Record<string, unknown>; // method-specific provenance (seed tasks, evolution chain, passage offsets)
  readonly scores?: Record<string, unknown>; // method-specific scores (from-documents: grounding), kept in provenance.scores
}

export type UnitOutcome = { readonly ok: true; readonly candidate: Candidate } | { readonly ok: false; readonly reason: string };

export interface UnitContext {
  readonly llm: SynthLlm;
  readonly prompts: PromptSet;
  readonly limits: TextLimits;
  readonly gen: Omit<GenOptions, 'seed' | 'stop'>;
  /** Generate with a seed derived from the unit's seed and the call's index; counts tokens. */
  chat(messages: readonly ChatMessage[], extra?: Partial<GenOptions>): Promise<Gen>;
  complete(prompt: string, extra?: Partial<GenOptions>): Promise<Gen>;
  readonly rng: Rng;
}

export interface WorkUnit {
  readonly id: string;
  readonly seed: number; // uint32
  run(ctx: UnitContext): Promise<UnitOutcome>;
}

/** A seed task: an instruction (and optionally an input and an output). */
export interface SeedTask { readonly instruction: string; readonly input?: string; readonly output?: string }

/** Seed tasks from JSONL lines of {"instruction"[, "input", "output"]}, {"prompt"} or {"messages"} (first user turn). */
export function parseSeeds(text: string, file: string): SeedTask[] {
  const out: SeedTask[] = [];
  text.split('\n').forEach((raw, i) => {
    if (!raw.trim()) return;
    let o: Record<string, unknown>;
    try { o = JSON.parse(raw); } catch (e) { throw new Error(`${file}:${i + 1}: invalid JSON: ${(e as Error).message}`); }
    const user = Array.isArray(o.messages) ? (o.messages as ChatMessage[]).find((m) => m.role === 'user')?.content : undefined;
    const instruction = typeof o.instruction === 'string' ? o.instruction : typeof o.prompt === 'string' ? o.prompt : typeof user === 'string' ? user : null;
    if (!instruction?.trim()) throw new Error(`${file}:${i + 1}: expected "instruction", "prompt" or "messages" with a user turn, got keys [${Object.keys(o).join(', ')}]`);
    const input = typeof o.input === 'string' && o.input.trim() ? o.input : undefined;
    out.push({ instruction: input ? `${instruction}\n\n${input}` : instruction, output: typeof o.output === 'string' ? o.output : undefined });
  });
  if (out.length === 0) throw new Error(`${file}: no seed tasks`);
  return out;
}

const unitSeed = (seed: number, id: string) => mix32(seed, hashString(id));

/** The generated text, trimmed, without a leading list number / "Instruction:" label or surrounding quotes. */
export function cleanInstruction(text: string): string {
  let t = text.trim().replace(/^(\d+[.)]\s*|[-*]\s+)/, '').replace(/^(new |rewritten |evolved )?(instruction|task|question|prompt)\s*:\s*/i, '').trim();
  if (/^".*"$/s.test(t)) t = t.slice(1, -1).trim();
  return t;
}

/** Answer an instruction and check the answer; the shared last step of every method. */
async function answer(ctx: UnitContext, instruction: string, system: string | undefined, source: Record<string, unknown>): Promise<UnitOutcome> {
  const msgs: ChatMessage[] = [...(system ? [{ role: 'system', content: system }] : []), { role: 'user', content: instruction }];
  const g = await ctx.chat(msgs);
  const response = g.text.trim();
  if (g.finish === 'length') return { ok: false, reason: 'response_truncated' };
  for (const v of [checkText(response, ctx.limits, 'response'), checkAnswer(response)]) if (!v.ok) return v;
  return { ok: true, candidate: { instruction, response, source } };
}

const systemOf = (ctx: UnitContext, method: string): string | undefined => {
  try { return ctx.prompts.text(method, 'system').trim() || undefined; } catch { return undefined; }
};

/** The longest one-line task self-instruct keeps, in tokens (a real model's tasks are 10-60). */
export const INSTRUCTION_TOKENS = 128;

/** self-instruct: k seed tasks as examples → a new instruction (not a near-duplicate of a seed) → its answer. */
export function selfInstructUnits(seeds: readonly SeedTask[], num: number, seed: number, seedIndex: LshIndex, examples = 3): WorkUnit[] {
  return Array.from({ length: num }, (_, i) => {
    const id = `self-instruct/${seed}/${i}`;
    return {
      id, seed: unitSeed(seed, id),
      async run(ctx) {
        const picks = ctx.rng.shuffle(seeds.map((_, j) => j)).slice(0, Math.min(examples, seeds.length));
        const list = picks.map((j, n) => `${n + 1}. ${seeds[j]!.instruction.replace(/\s+/g, ' ')}`).join('\n');
        // the task is the first line: stop there, and a line that runs past INSTRUCTION_TOKENS is cut mid-sentence
        const g = await ctx.chat([{ role: 'user', content: ctx.prompts.fill('self-instruct', 'instruction', { examples: list, next: String(picks.length + 1) }) }],
          { stop: ['\n'], maxTokens: Math.min(ctx.gen.maxTokens, INSTRUCTION_TOKENS) });
        if (g.finish === 'length') return { ok: false, reason: 'instruction_truncated' };
        const instruction = cleanInstruction(g.text.split('\n')[0] ?? '');
        for (const v of [checkText(instruction, ctx.limits, 'instruction'), checkAnswer(instruction)]) if (!v.ok) return v;
        const near = seedIndex.query(instruction);
        if (near) return { ok: false, reason: 'near_seed' };
        return answer(ctx, instruction, systemOf(ctx, 'self-instruct'), { seed_tasks: picks });
      },
    };
  });
}

export const EVOLUTIONS = ['deepen', 'broaden', 'concretise'] as const;

/** evol-instruct: rewrite a seed instruction over `rounds` rounds (deepen / broaden / concretise); failed rounds are dropped. */
export function evolInstructUnits(seeds: readonly SeedTask[], num: number, seed: number, rounds: number): WorkUnit[] {
  return Array.from({ length: num }, (_, i) => {
    const id = `evol-instruct/${seed}/${i}`;
    const parent = i % seeds.length;
    return {
      id, seed: unitSeed(seed, id),
      async run(ctx) {
        let current = seeds[parent]!.instruction;
        const chain: string[] = [];
        const failed: Record<string, number> = {};
        for (let r = 0; r < rounds; r++) {
          const op = EVOLUTIONS[ctx.rng.int(EVOLUTIONS.length)]!;
          const g = await ctx.chat([{ role: 'user', content: ctx.prompts.fill('evol-instruct', op, { instruction: current }) }]);
          const child = cleanInstruction(g.text);
          const why = child.length === 0 ? 'empty' : g.finish === 'length' || child.length > ctx.limits.maxChars ? 'too_long'
            : isCopy(child, current) ? 'copy' : !checkAnswer(child).ok ? 'refused' : !checkText(child, ctx.limits, 'instruction').ok ? 'not_language' : null;
          if (why) { failed[why] = (failed[why] ?? 0) + 1; continue; }
          chain.push(op);
          current = child;
        }
        if (chain.length === 0) return { ok: false, reason: 'no_evolution' };
        return answer(ctx, current, systemOf(ctx, 'evol-instruct'), { seed_task: parent, evolutions: chain, failed_rounds: failed });
      },
    };
  });
}

/** Magpie: the chat template up to the open user header alone; the model writes the user turn (to end of turn), then answers it. */
export function magpieUnits(num: number, seed: number): WorkUnit[] {
  return Array.from({ length: num }, (_, i) => {
    const id = `magpie/${seed}/${i}`;
    return {
      id, seed: unitSeed(seed, id),
      async run(ctx) {
        const system = systemOf(ctx, 'magpie');
        const prefix = ctx.llm.openUserTurn(system);
        if (prefix === null) throw new Error(`magpie needs the model's chat template (${ctx.llm.name} has none; with --endpoint give --model DIR for it)`);
        const g = await ctx.complete(prefix);
        if (g.finish === 'length') return { ok: false, reason: 'user_turn_unfinished' };
        const instruction = g.text.trim();
        for (const v of [checkText(instruction, ctx.limits, 'instruction'), checkAnswer(instruction)]) if (!v.ok) return v;
        return answer(ctx, instruction, system, { prefix_chars: prefix.length });
      },
    };
  });
}

/** A document: its name (kept in provenance) and text. */
export interface Doc { readonly name: string; readonly text: string }

/** from-documents: per passage `perPassage` questions grounded in it, answered from the passage; answers the passage
 *  does not support (grounding.ts) are dropped as `ungrounded_words` / `ungrounded_ll`. */
export function fromDocumentsUnits(docs: readonly Doc[], chunker: Chunker, perPassage: number, seed: number, ground: GroundingOptions = DEFAULT_GROUNDING): WorkUnit[] {
  const units: WorkUnit[] = [];
  for (const d of docs) {
    for (const p of chunker.chunk(d.name, d.text)) {
      for (let j = 0; j < perPassage; j++) {
        const id = `from-documents/${seed}/${p.id}/${j}`;
        units.push({
          id, seed: unitSeed(seed, id),
          async run(ctx) {
            const q = await ctx.chat([{ role: 'user', content: ctx.prompts.fill('from-documents', 'question', { passage: p.text }) }], { stop: ['\n'] });
            if (q.finish === 'length') return { ok: false, reason: 'question_truncated' }; // cut at max tokens, mid-question
            const question = cleanInstruction(q.text);
            for (const v of [checkText(question, ctx.limits, 'question'), checkAnswer(question)]) if (!v.ok) return v;
            const ask: ChatMessage[] = [{ role: 'user', content: ctx.prompts.fill('from-documents', 'answer', { passage: p.text, question }) }];
            const a = await ctx.chat(ask);
            const response = a.text.trim();
            if (a.finish === 'length') return { ok: false, reason: 'response_truncated' };
            for (const v of [checkText(response, ctx.limits, 'response'), checkAnswer(response)]) if (!v.ok) return v;
            const g = await grounding(ctx.llm, ground, p.text, question, ask, response);
            if (g.reason) return { ok: false, reason: g.reason };
            return { ok: true, candidate: { instruction: question, response, source: { passage_id: p.id, doc: p.doc, start: p.start, end: p.end }, scores: { grounding: g.score } } };
          },
        });
      }
    }
  }
  return units;
}
