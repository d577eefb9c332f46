// mapfile: a whole file as bytes, memory-mapped by the native addon when it is built, else read into memory.

import { constants as bufferConstants } from 'node:buffer';
import * as fs from 'node:fs';
import { loadAddon, noteMapped } from '../backend/native-addon.js';

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

/**
 * A file's bytes as the parsers read them: a Uint8Array, or, for a file longer than one typed array may be (Node 20:
 * 4 GiB, buffer.constants.MAX_LENGTH, and an mmap'd external buffer no longer either), a RangedFile that maps (or reads)
 * each range asked for. A Uint8Array is one; parsers take only `byteLength` and `subarray(begin, end)`.
 */
export interface FileBytes {
  readonly byteLength: number;
  /** Bytes [begin, end) (0 <= begin <= end <= byteLength). */
  subarray(begin: number, end: number): Uint8Array;
}

/** A file too long for one typed array: each subarray maps (or reads) that range; views keep their file backing. */
class RangedFile implements FileBytes {
  constructor(readonly file: string, readonly byteLength: number, private readonly range: (offset: number, length: number) => Uint8Array) {}
  subarray(begin: number, end: number): Uint8Array {
    if (!(Number.isSafeInteger(begin) && Number.isSafeInteger(end) && begin >= 0 && begin <= end && end <= this.byteLength)) {
      throw new RangeError(`${this.file}: bytes [${begin}, ${end}) are not inside the file (${this.byteLength} bytes)`);
    }
    return this.range(begin, end - begin);
  }
}

// Files above this many bytes are mapped (or read) a range at a time; null: above what one buffer can hold (mmap:
// buffer.constants.MAX_LENGTH; a read: 2 GiB - 1, fs.readFileSync's limit). Tests lower it to run that path on small files.
let rangedAbove: number | null = null;

/** Map files longer than `bytes` a range at a time (as those over Node's typed-array limit are); returns the previous limit. For tests. */
export function setMapFileRangedAbove(bytes: number | null): number | null {
  const prev = rangedAbove;
  rangedAbove = bytes;
  return prev;
}

/** The file's bytes; zero-copy mmap (private, unmapped when collected) when the addon is available. Errors name the file. */
export function mapFileSync(path: string): FileBytes {
  let st: fs.Stats;
  try {
    st = fs.statSync(path);
  } catch (e) {
    throw new Error(`${path}: cannot open: ${(e as Error).message}`);
  }
  if (!st.isFile()) throw new Error(`${path}: not a regular file`);
  const addon = useMmap && st.size > 0 ? loadAddon() : null;
  if (st.size > (rangedAbove ?? (addon ? bufferConstants.MAX_LENGTH : 2 ** 31 - 1))) {
    const size = st.size;
    if (addon) {
      return new RangedFile(path, size, (offset, length) => {
        let ab: ArrayBuffer;
        try {
          ab = addon.mmapFile(path, offset, length);
        } catch (e) {
          throw new Error(`${path}: mmap of bytes [${offset}, ${offset + length}) failed: ${(e as Error).message}`);
        }
        const at = ab.byteLength - length; // the range starts this far into its first page
        backing.set(ab, { file: path, base: at - offset, length: size });
        noteMapped(ab);
        return new Uint8Array(ab, at, length);
      });
    }
    return new RangedFile(path, size, (offset, length) => {
      const at = offset % 64; // the same alignment as in the file
      const buf = new Uint8Array(at + length);
      const fd = fs.openSync(path, 'r');
      try {
        for (let done = 0; done < length;) {
          const n = fs.readSync(fd, buf, at + done, Math.min(length - done, 2 ** 30), offset + done);
          if (n <= 0) throw new Error(`${path}: unexpected end of file reading bytes [${offset}, ${offset + length}) at byte ${offset + done}`);
          done += n;
        }
      } finally {
        fs.closeSync(fd);
      }
      backing.set(buf.buffer, { file: path, base: at - offset, length: size });
      return buf.subarray(at);
    });
  }
  if (addon) {
    try {
      const ab = addon.mmapFile(path);
      noteMapped(ab);
      return remember(path, new Uint8Array(ab));
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
export async function mapFile(path: string): Promise<FileBytes> {
  return mapFileSync(path);
}
