// Guard policies: custom category lists and exclusions from user input, and the Llama Guard → OpenAI moderation mapping.

import { defaultCategories, validateCategories, type GuardCategory, type GuardFormat } from './prompt.js';

/**
 * A category list as users write it (a --categories file, a request field): a list of {code?, name, description?}
 * (codes default to S1, S2, … by position) or an object {"S1": "name" | {name, description?}}.
 */
export function parseCategories(value: unknown, where: string): GuardCategory[] {
  let cats: GuardCategory[];
  if (Array.isArray(value)) {
    cats = value.map((c, i) => {
      if (typeof c === 'string') return { code: `S${i + 1}`, name: c };
      if (c === null || typeof c !== 'object') throw new Error(`${where}[${i}]: expected {code?, name, description?} or a name`);
      const o = c as Record<string, unknown>;
      for (const k of Object.keys(o)) if (!['code', 'name', 'description'].includes(k)) throw new Error(`${where}[${i}]: unknown field '${k}' (expected code, name, description)`);
      return { code: o.code === undefined ? `S${i + 1}` : o.code, name: o.name, ...(o.description === undefined ? {} : { description: o.description }) } as GuardCategory;
    });
  } else if (value !== null && typeof value === 'object') {
    cats = Object.entries(value as Record<string, unknown>).map(([code, v]) => {
      if (typeof v === 'string') return { code, name: v };
      const o = (v ?? {}) as Record<string, unknown>;
      return { code, name: o.name, ...(o.description === undefined ? {} : { description: o.description }) } as GuardCategory;
    });
  } else {
    throw new Error(`${where}: expected a list of categories or an object {"S1": "name", …}, got ${value === null ? 'null' : typeof value}`);
  }
  validateCategories(cats, where);
  return cats;
}

/** "S6,S7" or ["S6", "S7"] → codes. */
export function parseExclude(value: unknown, where: string): string[] {
  const list = typeof value === 'string' ? value.split(',').map((s) => s.trim()).filter((s) => s !== '') : value;
  if (!Array.isArray(list) || list.some((c) => typeof c !== 'string' || c === '')) {
    throw new Error(`${where}: expected category codes such as "S6,S7" or ["S6", "S7"]`);
  }
  return list as string[];
}

/** OpenAI's moderation category keys (omni-moderation). */
export const OPENAI_CATEGORIES = [
  'harassment', 'harassment/threatening', 'hate', 'hate/threatening', 'illicit', 'illicit/violent',
  'self-harm', 'self-harm/intent', 'self-harm/instructions', 'sexual', 'sexual/minors', 'violence', 'violence/graphic',
] as const;
export type OpenAiCategory = (typeof OPENAI_CATEGORIES)[number];

/** By the default category's name (same hazard in Llama Guard 2 and 3, different codes); names with no OpenAI key map to none. */
const BY_NAME: Record<string, readonly OpenAiCategory[]> = {
  'Violent Crimes': ['violence', 'illicit/violent'],
  'Non-Violent Crimes': ['illicit'],
  'Sex Crimes': ['sexual', 'illicit/violent'],
  'Child Exploitation': ['sexual/minors'],
  'Defamation': ['harassment'],
  'Specialized Advice': [],
  'Privacy': [],
  'Intellectual Property': [],
  'Indiscriminate Weapons': ['violence', 'illicit/violent'],
  'Hate': ['hate'],
  'Self-Harm': ['self-harm'],
  'Sexual Content': ['sexual'],
  'Elections': [],
  'Code Interpreter Abuse': ['illicit'],
};

/** The OpenAI keys one S-code of a format's default table stands for (custom tables map to none). */
export function openAiKeys(format: GuardFormat, code: string): readonly OpenAiCategory[] {
  const c = defaultCategories(format).find((x) => x.code === code);
  return c ? BY_NAME[c.name.replace(/\.\s*$/, '')] ?? [] : [];
}
