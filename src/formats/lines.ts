// Lines of a text file, read a chunk at a time: a JSONL file past V8's longest string (0x1fffffe8 characters, ~512 MiB)
// or readFileSync's 2 GiB reads as well as a small one, in memory that does not grow with the file.

import { constants } from 'node:buffer';
import { closeSync, openSync, readFileSync, readSync, statSync } from 'node:fs';

/** Bytes read at a time (a line longer than this is gathered across reads). */
export const LINE_CHUNK_BYTES = 16 * 2 ** 20;

export interface TextLine {
  readonly text: string; // without its '\n' (a '\r' before it is kept, as text.split('\n') keeps it)
  readonly number: number; // 1-based
  readonly offset: number; // byte offset of its first byte in the file
  readonly bytes: number; // its byte length, without the '\n'
  readonly terminated: boolean; // followed by '\n' (only the last line of a file is not)
}

export interface LineOptions {
  /** The name errors give the file (default its path). */
  readonly name?: string;
  readonly chunkBytes?: number;
  /**
   * The text after the last '\n' (a last line without a newline; '' when the file ends with one, as text.split('\n')
   * gives it): 'yield' it (the default), or 'skip' it undecoded (a torn write, which may end inside a character).
   */
  readonly unterminated?: 'yield' | 'skip';
}

/** A line that is not UTF-8, or too long for one string; `line` is 1-based. */
export class LineError extends Error {
  constructor(readonly file: string, readonly line: number, readonly reason: string) {
    super(`${file}:${line}: ${reason}`);
  }
}

/**
 * The lines of `file` as `readFileSync(file, 'utf8').split('\n')` has them (a leading byte order mark kept, '\r' kept),
 * except that a line that is not valid UTF-8 is a LineError naming the file and line, not U+FFFD. Splitting on the byte
 * 0x0A is exact: it never occurs inside a UTF-8 multi-byte sequence. The file opens at the first next() and closes when
 * the loop ends, breaks or throws; a file system error (ENOENT, EISDIR) is thrown as fs throws it, with its code.
 */
export function* fileLines(file: string, o: LineOptions = {}): Generator<TextLine, void, undefined> {
  const name = o.name ?? file;
  const chunkBytes = o.chunkBytes ?? LINE_CHUNK_BYTES;
  if (!(Number.isInteger(chunkBytes) && chunkBytes >= 1)) throw new RangeError(`chunkBytes must be an integer >= 1, got ${chunkBytes}`);
  const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
  const decode = (b: Uint8Array, number: number): string => {
    try {
      return utf8.decode(b);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ERR_ENCODING_INVALID_ENCODED_DATA') throw new LineError(name, number, `cannot read the line (${b.length} bytes): ${(e as Error).message}`);
      const at = firstInvalidByte(b);
      const where = at < b.length ? `an invalid byte at column ${at + 1}, 0x${b[at]!.toString(16).padStart(2, '0')}` : (e as Error).message;
      throw new LineError(name, number, `not valid UTF-8 (${where}); convert the file to UTF-8 first (e.g. iconv -f latin1 -t utf-8)`);
    }
  };
  const fd = openSync(file, 'r');
  try {
    const buf = Buffer.allocUnsafe(chunkBytes);
    let pending: Buffer[] = []; // the current line's bytes from earlier reads (copies: buf is read into again)
    let pos = 0; // file offset of buf[0]
    let start = 0; // file offset of the current line
    let number = 1;
    for (;;) {
      const got = readSync(fd, buf, 0, chunkBytes, pos);
      if (got === 0) break;
      const view = buf.subarray(0, got);
      let from = 0;
      for (let nl = view.indexOf(0x0a, from); nl >= 0; nl = view.indexOf(0x0a, from)) {
        const piece = view.subarray(from, nl);
        const bytes = pending.length ? Buffer.concat([...pending, piece]) : piece;
        yield { text: decode(bytes, number), number, offset: start, bytes: bytes.length, terminated: true };
        pending = [];
        number++;
        start = pos + nl + 1;
        from = nl + 1;
      }
      if (from < got) pending.push(Buffer.from(view.subarray(from)));
      pos += got;
    }
    if (o.unterminated === 'skip') return;
    const bytes = Buffer.concat(pending);
    yield { text: decode(bytes, number), number, offset: start, bytes: bytes.length, terminated: false };
  } finally {
    closeSync(fd);
  }
}

/** The lines of a string as fileLines gives them (offset and bytes in UTF-16 units), without splitting it all at once. */
export function* stringLines(text: string): Generator<TextLine, void, undefined> {
  let from = 0;
  for (let number = 1; ; number++) {
    const nl = text.indexOf('\n', from);
    const end = nl < 0 ? text.length : nl;
    yield { text: text.slice(from, end), number, offset: from, bytes: end - from, terminated: nl >= 0 };
    if (nl < 0) return;
    from = nl + 1;
  }
}

/** The bytes of `file` a chunk at a time (each a fresh Buffer), for hashing or copying a file too large to read whole. */
export function* fileChunks(file: string, chunkBytes = LINE_CHUNK_BYTES): Generator<Buffer, void, undefined> {
  const fd = openSync(file, 'r');
  try {
    for (let pos = 0; ;) {
      const buf = Buffer.allocUnsafe(chunkBytes);
      const got = readSync(fd, buf, 0, chunkBytes, pos);
      if (got === 0) return;
      pos += got;
      yield got === chunkBytes ? buf : buf.subarray(0, got);
    }
  } finally {
    closeSync(fd);
  }
}

/** Index of the first byte of `b` that does not belong to a well-formed UTF-8 sequence (b.length if none). */
export function firstInvalidByte(b: Uint8Array): number {
  for (let i = 0; i < b.length;) {
    const c = b[i]!;
    if (c < 0x80) { i++; continue; }
    // lead byte -> sequence length and the range of its second byte (no overlong forms, no surrogates, <= U+10FFFF)
    const [n, lo, hi] = c >= 0xc2 && c <= 0xdf ? [2, 0x80, 0xbf] : c === 0xe0 ? [3, 0xa0, 0xbf] : c === 0xed ? [3, 0x80, 0x9f]
      : c >= 0xe1 && c <= 0xef ? [3, 0x80, 0xbf] : c === 0xf0 ? [4, 0x90, 0xbf] : c >= 0xf1 && c <= 0xf3 ? [4, 0x80, 0xbf]
        : c === 0xf4 ? [4, 0x80, 0x8f] : [0, 0, 0];
    if (n === 0) return i;
    for (let k = 1; k < n; k++) {
      const x = b[i + k];
      if (x === undefined || x < (k === 1 ? lo : 0x80) || x > (k === 1 ? hi : 0xbf)) return i;
    }
    i += n;
  }
  return b.length;
}

/**
 * The whole of the UTF-8 text file `file` as one string, for a reader that needs a document whole (to chunk it). Bytes
 * that are not UTF-8 throw `notUtf8(offset of the first invalid byte)`'s message. A file too large for one string (V8's
 * longest, 0x1fffffe8 UTF-16 units: ~512 MiB of ASCII) or for readFileSync (2 GiB) is refused by name and size with
 * what to do, where before it surfaced as a misleading "not UTF-8" (the decoder's ERR_STRING_TOO_LONG caught as such).
 * `keepBom`: a leading byte order mark stays in the text (default: dropped). File system errors are thrown as fs throws
 * them, with their code.
 */
export function readTextFile(file: string, o: { readonly keepBom?: boolean; readonly notUtf8: (offset: number) => string }): string {
  const tooLong = (bytes: number) => new Error(`${file}: ${bytes} bytes (${(bytes / 2 ** 20).toFixed(0)} MiB) of text is more than one JavaScript string holds (${constants.MAX_STRING_LENGTH} characters, ~512 MiB) and this reader needs the document whole; split it into smaller files`);
  let bytes: Buffer;
  try {
    bytes = readFileSync(file);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ERR_FS_FILE_TOO_LARGE') throw tooLong(statSync(file).size);
    throw e;
  }
  try {
    return new TextDecoder('utf-8', { fatal: true, ignoreBOM: o.keepBom ?? false }).decode(bytes);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ERR_STRING_TOO_LONG') throw tooLong(bytes.length);
    throw new Error(o.notUtf8(firstInvalidByte(bytes)));
  }
}
