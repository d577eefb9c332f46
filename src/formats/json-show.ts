// showJson: a value read from a model file, as it goes into an error message: JSON, cut short, never throwing.

/**
 * JSON.stringify(v) for an error message: at most `max` characters (then "... (N chars)"), and a placeholder where
 * JSON.stringify itself fails (a value nested thousands deep overflows its recursion: "Maximum call stack size exceeded").
 */
export function showJson(v: unknown, max = 120): string {
  if (typeof v === 'bigint') return String(v); // a GGUF u64 / i64 past 2^53
  let s: string | undefined;
  try {
    s = JSON.stringify(v);
  } catch (e) {
    if (!(e instanceof RangeError)) return `(${Array.isArray(v) ? 'an array' : typeof v} JSON cannot show)`; // a bigint inside
    return Array.isArray(v) ? '[an array nested too deeply to show]' : '{an object nested too deeply to show}';
  }
  if (s === undefined) return String(v);
  return s.length > max ? `${s.slice(0, max)}... (${s.length} chars)` : s;
}
