// Runtime LoRA adapter routes (vLLM's): POST /v1/load_lora_adapter and /v1/unload_lora_adapter, off unless
// --enable-lora-loading; adapter paths must resolve (symlinks too) inside --lora-root.

import { realpathSync, statSync } from 'node:fs';
import { isAbsolute, relative, resolve } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { EngineRequestError, type EngineClient } from '../engine/protocol.js';
import { jobModelPrefix } from '../platform/jobs/service.js';
import { ApiError, invalid } from './errors.js';

export interface LoraRouteOptions {
  readonly enabled: boolean; // --enable-lora-loading
  readonly root: string | null; // --lora-root: every runtime adapter path must lie inside it
  readonly baseName: string; // the base model's served name (not usable as an adapter name)
  readonly engine: () => EngineClient;
}

/** An adapter directory inside `root`: relative paths are taken from root; throws 400 for anything outside. */
export function resolveAdapterPath(root: string, p: string): string {
  let realRoot: string;
  try { realRoot = realpathSync(root); } catch { throw new ApiError(500, `--lora-root ${root} does not exist`, null, 'lora_root_missing'); }
  let real: string;
  try { real = realpathSync(resolve(realRoot, p)); } catch { throw invalid('lora_path', `lora_path '${p.slice(0, 300)}' does not exist under the LoRA root`, 'lora_path_not_found'); }
  const rel = relative(realRoot, real);
  if (rel === '' || rel.startsWith('..') || isAbsolute(rel)) throw invalid('lora_path', `lora_path '${p.slice(0, 300)}' resolves outside the LoRA root (--lora-root); give a directory inside it`, 'lora_path_outside_root');
  if (!statSync(real).isDirectory()) throw invalid('lora_path', `lora_path '${p.slice(0, 300)}' is not a directory (expected adapter_config.json + adapter_model.safetensors)`, 'lora_path_not_found');
  return real;
}

/**
 * Why `name` cannot be an adapter's served name beside the base `base`, or null: the base's own name (requests naming
 * it get the base, so the adapter would be unreachable), or a name in the fine-tuning jobs' namespace (an adapter
 * there would replace a job's model or checkpoint under the job's name, until the next start served the job's again).
 */
export function reservedAdapterName(name: string, base: string): string | null {
  if (name === base) return `'${name}' is the base model's name; choose another adapter name`;
  if (name.startsWith(jobModelPrefix(base))) return `'${name.slice(0, 300)}' is in the fine-tuning jobs' namespace (${jobModelPrefix(base)}…, their models and checkpoints, served from the job's own files); choose another adapter name`;
  return null;
}

function field(body: unknown, name: string): string {
  const v = body !== null && typeof body === 'object' ? (body as Record<string, unknown>)[name] : undefined;
  if (typeof v !== 'string' || v.length === 0) throw invalid(name, `'${name}' must be a non-empty string`, 'invalid_type');
  if (v.length > 4096) throw invalid(name, `'${name}' is longer than 4096 characters`);
  return v;
}

export function registerLoraRoutes(app: FastifyInstance, o: LoraRouteOptions): void {
  const gate = (): EngineClient => {
    if (!o.enabled) throw new ApiError(404, 'runtime LoRA loading is off: start floe serve with --enable-lora-loading --lora-root DIR', null, 'lora_loading_disabled');
    const e = o.engine();
    if (!e.loadAdapter || !e.unloadAdapter) throw new ApiError(500, 'this engine cannot load LoRA adapters', null, 'lora_unsupported');
    return e;
  };

  app.post('/v1/load_lora_adapter', async (req) => {
    const engine = gate();
    const name = field(req.body, 'lora_name');
    const path = field(req.body, 'lora_path');
    const reserved = reservedAdapterName(name, o.baseName);
    if (reserved) throw invalid('lora_name', reserved);
    if (o.root === null) throw new ApiError(500, 'no --lora-root is set, so no adapter path is allowed', null, 'lora_root_missing');
    const dir = resolveAdapterPath(o.root, path);
    let a: Awaited<ReturnType<NonNullable<EngineClient['loadAdapter']>>>;
    try {
      a = await engine.loadAdapter!(name, dir);
    } catch (e) {
      // the adapter dir could not be read or does not fit the base: the client's lora_path is what to fix
      if (e instanceof EngineRequestError && e.status === 400) throw new ApiError(400, e.message, 'lora_path', 'invalid_adapter');
      throw e;
    }
    return { object: 'lora_adapter', id: a.name, parent: o.baseName, root: a.path, version: a.id, rank: a.rank };
  });

  app.post('/v1/unload_lora_adapter', async (req) => {
    const engine = gate();
    const name = field(req.body, 'lora_name');
    if (name.startsWith(jobModelPrefix(o.baseName))) throw invalid('lora_name', `'${name.slice(0, 300)}' is a fine-tuning job's model or checkpoint: it is served while its job is in the data dir (delete a job's model with DELETE /v1/models/{model})`);
    await engine.unloadAdapter!(name);
    return { object: 'lora_adapter', id: name, deleted: true };
  });
}
