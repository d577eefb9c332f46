// Adapter table: the LoRA adapters an engine serves by name, read into host memory once and kept there, up to an
// LRU cap (--max-cpu-loras) past which idle ones are dropped and read again on demand; each load gets a fresh
// version id (prefix-cache key), so a reloaded adapter never shares KV with its old version.

import type { LlamaConfig } from '../model/config.js';
import { readPeftAdapter } from '../model/adapter.js';
import type { LoraAdapter } from '../model/lora.js';

/** One adapter in host memory. */
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
  readonly id: number; // the version last loaded
  readonly rank: number;
  readonly resident: boolean; // in host memory now (false: evicted, read again from path when asked for)
}

export const DEFAULT_MAX_LORAS = 4;
export const DEFAULT_MAX_LORA_RANK = 64;

/** A served name: its directory, and its weights while resident. */
interface Registered {
  readonly path: string;
  rank: number;
  id: number; // the version last loaded
  loaded: LoadedAdapter | null;
  lastUse: number; // LRU clock
}

export class AdapterTable {
  private readonly byName = new Map<string, Registered>();
  private nextId = 1;
  private clock = 0;
  /** Adapter directories read so far (first loads and reloads after eviction). */
  reads = 0;

  /**
   * maxResident: adapters kept in host memory (--max-cpu-loras); past it the least recently used one that no
   * request holds (`pinned`) is dropped, and read again from its directory when next asked for.
   */
  constructor(readonly cfg: LlamaConfig, readonly maxRank = DEFAULT_MAX_LORA_RANK, readonly maxResident = Infinity, private readonly pinned: (id: number) => boolean = () => false) {
    if (!(Number.isInteger(maxRank) && maxRank >= 1)) throw new RangeError(`max LoRA rank must be an integer >= 1, got ${maxRank}`);
    if (!(maxResident === Infinity || (Number.isInteger(maxResident) && maxResident >= 1))) throw new RangeError(`max CPU LoRAs must be an integer >= 1, got ${maxResident}`);
  }

  /** Read a PEFT adapter directory and serve it as `name` (replacing an adapter of that name). */
  load(name: string, path: string): AdapterInfo {
    const a = readPeftAdapter(path, this.cfg);
    this.reads++;
    return this.add(name, path, a);
  }

  /** Serve an adapter already in memory as `name`; throws when its rank exceeds the limit or it does not fit. */
  add(name: string, path: string, adapter: LoraAdapter): AdapterInfo {
    if (typeof name !== 'string' || name.length === 0) throw new Error('adapter name must be a non-empty string');
    const entry = this.check(name, path, adapter);
    const r: Registered = { path, rank: adapter.config.rank, id: entry.id, loaded: entry, lastUse: ++this.clock };
    this.byName.set(name, r);
    this.evict(r);
    return info(name, r);
  }

  /** Stop serving `name` (requests already running keep their copy); false when there is none. */
  unload(name: string): boolean {
    return this.byName.delete(name);
  }

  /** The adapter served as `name`, read again from its directory when it was evicted; marks it most recently used. */
  get(name: string): LoadedAdapter | undefined {
    const r = this.byName.get(name);
    if (!r) return undefined;
    r.lastUse = ++this.clock;
    if (!r.loaded) {
      let a: LoraAdapter;
      try {
        a = readPeftAdapter(r.path, this.cfg);
      } catch (e) {
        throw new Error(`LoRA adapter ${name} was evicted from memory (--max-cpu-loras ${this.maxResident}) and cannot be read again from ${r.path}: ${(e as Error).message}`);
      }
      this.reads++;
      r.loaded = this.check(name, r.path, a);
      r.rank = a.config.rank;
      r.id = r.loaded.id;
      this.evict(r);
    }
    return r.loaded;
  }

  /** Adapters in host memory now. */
  get resident(): number {
    let n = 0;
    for (const r of this.byName.values()) if (r.loaded) n++;
    return n;
  }

  list(): AdapterInfo[] {
    return [...this.byName.entries()].map(([name, r]) => info(name, r));
  }

  private check(name: string, path: string, adapter: LoraAdapter): LoadedAdapter {
    const r = adapter.config.rank;
    if (r > this.maxRank) throw new Error(`adapter ${name} (${path}) has rank ${r}, above --max-lora-rank ${this.maxRank}`);
    if (adapter.layers.length > this.cfg.numLayers) throw new Error(`adapter ${name} has ${adapter.layers.length} layers, the model has ${this.cfg.numLayers}`);
    return { name, path, id: this.nextId++, adapter };
  }

  /** Drop least recently used resident adapters (never `keep`, never one a request holds) down to maxResident. */
  private evict(keep: Registered): void {
    let n = this.resident;
    while (n > this.maxResident) {
      let lru: Registered | null = null;
      for (const r of this.byName.values()) {
        if (r === keep || !r.loaded || this.pinned(r.loaded.id)) continue;
        if (!lru || r.lastUse < lru.lastUse) lru = r;
      }
      if (!lru) return; // every other resident adapter is in use: stay above the cap until they finish
      lru.loaded = null;
      n--;
    }
  }
}

function info(name: string, r: Registered): AdapterInfo {
  return { name, path: r.path, id: r.id, rank: r.rank, resident: r.loaded !== null };
}
