// Runtime checks of the library's option objects (the lowest layer, so every layer may use them): a misspelled key or a value of the wrong kind fails naming it.

/** Every key of an options interface, spelled once; `satisfies Record<keyof T, true>` keeps the list complete. */
export type OptionKeys<T> = Readonly<Record<keyof T, true>>;

/** How a value looks in an error: strings quoted, with its type where it is not a number. */
export function describe(v: unknown): string {
  if (typeof v === 'string') return `'${v}' (a string)`;
  if (v === null || v === undefined || typeof v === 'number' || typeof v === 'boolean') return String(v);
  if (Array.isArray(v)) return 'an array';
  return typeof v === 'object' ? `an object (${v.constructor?.name ?? 'Object'})` : typeof v;
}

/** `opts` must be a plain object (or absent where `optional`) whose keys are all in `keys`: a TypeError names where, the key and the nearest known one. */
export function checkOptions<T>(where: string, opts: unknown, keys: OptionKeys<T>, optional = true): void {
  if (opts === undefined && optional) return;
  if (typeof opts !== 'object' || opts === null || Array.isArray(opts)) throw new TypeError(`${where}: options must be an object, got ${describe(opts)}`);
  const known = Object.keys(keys);
  for (const k of Object.keys(opts)) {
    if (Object.hasOwn(keys, k)) continue;
    const near = nearest(k, known);
    throw new TypeError(`${where}: unknown option '${k}'${near ? ` (did you mean '${near}'?)` : ''}; the options are ${known.join(', ')}`);
  }
}

/**
 * The known key a misspelling most likely meant: same letters ignoring case and '_' / '-', else one it abbreviates,
 * else within 2 edits, else the longest whose letters it holds in order (a CLI flag's name: kvCacheDtype → kvDtype).
 */
function nearest(k: string, known: readonly string[]): string | null {
  const norm = (s: string) => s.toLowerCase().replace(/[_-]/g, '');
  const same = known.find((c) => norm(c) === norm(k)) ?? (k.length >= 3 ? known.find((c) => norm(c).startsWith(norm(k))) : undefined);
  if (same) return same;
  let best: string | null = null;
  let bestD = 3;
  for (const c of known) {
    const d = editDistance(norm(k), norm(c));
    if (d < bestD) { best = c; bestD = d; }
  }
  if (best) return best;
  for (const c of known) if (norm(c).length >= 4 && isSubsequence(norm(c), norm(k)) && c.length > (best?.length ?? 0)) best = c;
  return best;
}

function isSubsequence(short: string, long: string): boolean {
  let i = 0;
  for (const ch of long) if (ch === short[i]) i++;
  return i === short.length;
}

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) cur[j] = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    prev = cur;
  }
  return prev[b.length]!;
}
