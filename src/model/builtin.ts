// The models shipped in the floe package (models/<name>), found from the package, not from the working directory.

import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** floe-brown: the default model; -draft: its draft model; -tools: a LoRA adapter for it (tool calling); floe-embed: embeddings; floe-guard: safety. */
export const BUILTIN_MODELS = ['floe-brown', 'floe-brown-draft', 'floe-brown-tools', 'floe-embed', 'floe-guard'] as const;
export type BuiltinModelName = (typeof BUILTIN_MODELS)[number];

/** The floe package root: the nearest folder above this file whose package.json is named "floe" (src/ or dist/src/). */
export function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg) && (JSON.parse(readFileSync(pkg, 'utf8')) as { name?: string }).name === 'floe') return dir;
    const up = dirname(dir);
    if (up === dir) throw new Error(`cannot find the floe package root above ${fileURLToPath(import.meta.url)}`);
    dir = up;
  }
}

/** The absolute path of a built-in model's directory (default floe-brown): an HF model dir, or for floe-brown-tools a PEFT adapter. */
export function builtinModel(name: BuiltinModelName = 'floe-brown'): string {
  if (!(BUILTIN_MODELS as readonly string[]).includes(name)) throw new Error(`'${name}' is not a built-in model; floe ships ${BUILTIN_MODELS.join(', ')}`);
  return join(packageRoot(), 'models', name);
}
