// mapfile: a whole file as bytes, memory-mapped by the native addon when it is built, else read into memory.

import * as fs from 'node:fs';
import { loadAddon } from '../backend/native-addon.js';

let useMmap = process.env.FLOE_NO_MMAP !== '1';

/** Turn mmap off (read into memory) or back on; returns the previous setting. For tests and odd filesystems. */
export function setMapFileMmap(on: boolean): boolean {
  const prev = useMmap;
  useMmap = on;
  return prev;
}

/** Whether mapFile memory-maps (addon built and mmap enabled) or reads into memory. */
export function mapFileUsesMmap(): boolean {
  return useMmap && loadAddon() !== null;
}

// Which file each returned buffer holds, so a weight view can be re-read from disk (model/offload.ts streams layers).
const backing = new WeakMap<ArrayBufferLike, { readonly file: string; readonly base: number; readonly length: number }>();

function remember(file: string, bytes: Uint8Array): Uint8Array {
  backing.set(bytes.buffer, { file, base: bytes.byteOffset, length: bytes.byteLength });
  return bytes;
}

/** The file and byte offset a view of a mapFile result reads, or null when the bytes were made in memory. */
export function fileBackingOf(view: Uint8Array): { file: string; offset: number } | null {
  const b = backing.get(view.buffer);
  if (!b) return null;
  const offset = view.byteOffset - b.base;
  return offset >= 0 && offset + view.byteLength <= b.length ? { file: b.file, offset } : null;
}

/** The file's bytes; zero-copy mmap (private, unmapped when collected) when the addon is available. Errors name the file. */
export function mapFileSync(path: string): Uint8Array {
  let st: fs.Stats;
  try {
    st = fs.statSync(path);
  } catch (e) {
    throw new Error(`${path}: cannot open: ${(e as Error).message}`);
  }
  if (!st.isFile()) throw new Error(`${path}: not a regular file`);
  const addon = useMmap && st.size > 0 ? loadAddon() : null;
  if (addon) {
    try {
      return remember(path, new Uint8Array(addon.mmapFile(path)));
    } catch (e) {
      throw new Error(`${path}: mmap failed: ${(e as Error).message}`);
    }
  }
  try {
    const buf = fs.readFileSync(path);
    // Keep the file start 8-byte aligned so typed views at aligned offsets are zero-copy.
    if (buf.byteOffset % 8 !== 0) return remember(path, new Uint8Array(buf));
    return remember(path, new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength));
  } catch (e) {
    throw new Error(`${path}: cannot read: ${(e as Error).message}`);
  }
}

/** Async form of mapFileSync (the mapping itself is synchronous). */
export async function mapFile(path: string): Promise<Uint8Array> {
  return mapFileSync(path);
}
