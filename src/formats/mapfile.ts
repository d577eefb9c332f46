// mapfile: a whole file as bytes, memory-mapped by the native addon when it is built, else read into memory.

import * as fs from 'node:fs';

interface MmapAddon { mmapFile(path: string): ArrayBuffer }

let addon: MmapAddon | null | undefined; // undefined: not looked up yet; null: unavailable

/** Looks up the native addon's mmapFile once; later calls to mapFileSync use it. */
export async function initMapFile(): Promise<boolean> {
  if (addon !== undefined) return addon !== null;
  addon = null;
  try {
    // Variable specifier: the loader is optional (built by another layer, may be absent).
    const spec = '../backend/native-addon.js';
    const mod = (await import(spec)) as Record<string, unknown>;
    for (const v of Object.values(mod)) {
      const cand = typeof v === 'function' && v.length === 0 ? safeCall(v as () => unknown) : v;
      if (cand && typeof (cand as MmapAddon).mmapFile === 'function') { addon = cand as MmapAddon; break; }
    }
  } catch {
    addon = null;
  }
  return addon !== null;
}

function safeCall(f: () => unknown): unknown {
  try { return f(); } catch { return null; }
}

/** Whether mapFile currently memory-maps (true) or reads into memory (false). */
export function mapFileUsesMmap(): boolean { return !!addon; }

/** The file's bytes; zero-copy mmap when the addon is available. Errors name the file. */
export function mapFileSync(path: string): Uint8Array {
  let st: fs.Stats;
  try {
    st = fs.statSync(path);
  } catch (e) {
    throw new Error(`${path}: cannot open: ${(e as Error).message}`);
  }
  if (!st.isFile()) throw new Error(`${path}: not a regular file`);
  if (addon && st.size > 0) {
    try {
      return new Uint8Array(addon.mmapFile(path));
    } catch (e) {
      throw new Error(`${path}: mmap failed: ${(e as Error).message}`);
    }
  }
  try {
    const buf = fs.readFileSync(path);
    // Keep 8-byte alignment of the file start so typed views at aligned offsets are zero-copy.
    if (buf.byteOffset % 8 !== 0) return new Uint8Array(buf);
    return new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
  } catch (e) {
    throw new Error(`${path}: cannot read: ${(e as Error).message}`);
  }
}

/** Like mapFileSync, after trying to load the native addon. */
export async function mapFile(path: string): Promise<Uint8Array> {
  await initMapFile();
  return mapFileSync(path);
}
