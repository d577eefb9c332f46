// OpenAI's rule for the `metadata` of batches and fine-tuning jobs: an object of at most 16 string values, keys up to
// 64 characters, values up to 512.

export const METADATA_MAX_KEYS = 16;
export const METADATA_MAX_KEY = 64;
export const METADATA_MAX_VALUE = 512;

/** What is wrong with a request's `metadata` (message and param), or null when it is absent, null or valid. */
export function metadataProblem(md: unknown): { message: string; param: string } | null {
  if (md === undefined || md === null) return null;
  if (typeof md !== 'object' || Array.isArray(md)) return { message: `metadata must be an object of string values, got ${Array.isArray(md) ? 'an array' : JSON.stringify(md)}`, param: 'metadata' };
  const keys = Object.keys(md);
  if (keys.length > METADATA_MAX_KEYS) return { message: `metadata may hold at most ${METADATA_MAX_KEYS} keys, got ${keys.length}`, param: 'metadata' };
  for (const k of keys) {
    if (k.length > METADATA_MAX_KEY) return { message: `metadata key '${k.slice(0, 40)}…' is ${k.length} characters; keys are at most ${METADATA_MAX_KEY}`, param: 'metadata' };
    const v = (md as Record<string, unknown>)[k];
    if (typeof v !== 'string') return { message: `metadata.${k} must be a string, got ${JSON.stringify(v) ?? typeof v}`, param: `metadata.${k}` };
    if (v.length > METADATA_MAX_VALUE) return { message: `metadata.${k} is ${v.length} characters; values are at most ${METADATA_MAX_VALUE}`, param: `metadata.${k}` };
  }
  return null;
}
