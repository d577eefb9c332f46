// Text helpers shared by the speculative-decoding benches (speculative.ts, copy-model.ts).

/** The first whole sentences of a record (whitespace collapsed), up to about `chars` characters (at least one sentence). */
export function passage(text: string, chars: number): string {
  const sentences = text.replace(/\s+/g, ' ').match(/[^.!?]+[.!?]+["')]*\s*/g) ?? [text];
  let out = '';
  for (const s of sentences) { if (out.length > 0 && out.length + s.length > chars) break; out += s; }
  return out.trim();
}

/** The first `n` space-separated words of `s`. */
export const firstWords = (s: string, n: number): string => s.split(' ').slice(0, n).join(' ');
