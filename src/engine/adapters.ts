// Adapter table: the LoRA adapters an engine serves by name, read once into host memory; each load gets a fresh
// version id (prefix-cache key), so a reloaded adapter never shares KV with its old version.

import type { LlamaConfig } from '../model/config.js';
import { readPeftAdapter } from '../model/adapter.js';
import type { LoraAdapter } from '../model/lora.js';

/** One served adapter. */
export interface LoadedAdapter {
  readonly name: string;
  readonly path: string;
  readonly id: number; // ≥ 1, unique per load in this engine; 0 is the base model
  readonly adapter: LoraAdapter;
}

/** What /v1/models shows of an adapter (plain data, crosses the worker boundary). */
export interface AdapterInfo {
  readonly name: string;
  readonly path: string;
  readonly id: number;
  readonly rank: number;
}

export const DEFAULT_MAX_LORAS = 4;
export const DEFAULT_MAX_LORA_RANK = 64;

export class AdapterTable {
  private readonly byName = new Map<string, LoadedAdapter>();
  private nextId = 1;

  constructor(readonly cfg: LlamaConfig, readonly maxRank = DEFAULT_MAX_LORA_RANK) {
    if (!(Number.isInteger(maxRank) && maxRank >= 1)) throw new RangeError(`max LoRA rank must be an integer >= 1, got ${maxRank}`);
  }

  /** Read a PEFT adapter directory and serve it as `name` (replacing an adapter of that name). */
  load(name: string, path: string): AdapterInfo {
    return this.add(name, path, readPeftAdapter(path, this.cfg));
  }

  /** Serve an adapter already in memory as `name`; throws when its rank exceeds the limit or it does not fit. */
  add(name: string, path: string, adapter: LoraAdapter): AdapterInfo {
    if (typeof name !== 'string' || name.length === 0) throw new Error('adapter name must be a non-empty string');
    const r = adapter.config.rank;
    if (r > this.maxRank) throw new Error(`adapter ${name} (${path}) has rank ${r}, above --max-lora-rank ${this.maxRank}`);
    if (adapter.layers.length > this.cfg.numLayers) throw new Error(`adapter ${name} has ${adapter.layers.length} layers, the model has ${this.cfg.numLayers}`);
    const entry: LoadedAdapter = { name, path, id: this.nextId++, adapter };
    this.byName.set(name, entry);
    return info(entry);
  }

  /** Stop serving `name` (requests already running keep their copy); false when there is none. */
  unload(name: string): boolean {
    return this.byName.delete(name);
  }

  get(name: string): LoadedAdapter | undefined {
    return this.byName.get(name);
  }

  list(): AdapterInfo[] {
    return [...this.byName.values()].map(info);
  }
}

function info(a: LoadedAdapter): AdapterInfo {
  return { name: a.name, path: a.path, id: a.id, rank: a.adapter.config.rank };
}
