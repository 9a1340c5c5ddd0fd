/**
 * A synchronous tar reader for layer streams. Bytes are pushed in as they
 * come out of the decompressor; each entry's header goes to a callback and
 * its data, as views of the pushed chunks, straight to the sink the callback
 * returns. Nothing waits on a promise per entry or per chunk (an async
 * iterator over entries cost ~80 us per entry, more than creating the file),
 * and nothing is copied except headers split across chunks and extended
 * headers.
 *
 * Formats: ustar, POSIX pax (per-entry and global extended headers), GNU
 * (long names and link targets) and v7. The rules follow Go's archive/tar,
 * which builds and reads most layers in the wild: two zero blocks end the
 * archive (what follows is ignored; a zero block then a header is an error),
 * link, symlink, device, fifo and directory entries carry no data whatever
 * their size says, extended headers are capped at 1 MiB. Sparse files are
 * refused rather than unpacked wrong.
 */

const BLOCK = 512;
/** Extended headers (pax records, GNU long names) larger than this are refused. */
const MAX_EXTENDED_HEADER = 1024 * 1024;
const XATTR_PREFIX = 'SCHILY.xattr.';

export type TarEntryType =
  | 'file'
  | 'link'
  | 'symlink'
  | 'character-device'
  | 'block-device'
  | 'directory'
  | 'fifo'
  | 'contiguous-file'
  | 'unsupported';

/**
 * Names and link targets are byte strings: one char per byte (latin1), so
 * that a name that is not UTF-8 reaches the filesystem as the bytes it was
 * (Buffer.from(name, 'latin1')); `displayName` turns one into text for people.
 */
export interface TarHeader {
  name: string;
  type: TarEntryType;
  /** The raw type flag (for naming unsupported entries). */
  typeflag: string;
  mode: number;
  uid: number;
  gid: number;
  /** Bytes of data that follow (0 for every type but files and unsupported ones). */
  size: number;
  /** Seconds since the epoch; pax headers may give a fraction. */
  mtime: number;
  linkname: string;
  devmajor: number;
  devminor: number;
  /** `SCHILY.xattr.*` pax records: name without the prefix → the exact value bytes. */
  xattrs?: Map<string, Buffer>;
}

/** Receives one entry's data, in order, then `end`. */
export interface TarBody {
  write(data: Buffer): void;
  end(): void;
}

/**
 * What the entry callback returns: a sink for the entry's data (undefined:
 * the data is skipped), or a promise of one when handling the entry takes
 * I/O that cannot be synchronous (a process spawn); the reader then pauses.
 */
export type TarEntryResult = TarBody | undefined | Promise<TarBody | undefined>;

export class TarFormatError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TarFormatError';
  }
}

type State =
  /** Collecting a 512-byte header block. */
  | 'header'
  /** Passing an entry's data to its sink (or skipping it). */
  | 'data'
  /** Collecting an extended header's data. */
  | 'extended'
  /** Skipping the padding to the next block. */
  | 'padding'
  /** After the end-of-archive blocks: the rest is ignored. */
  | 'end';

const TYPES: Record<string, TarEntryType> = {
  '0': 'file',
  '\0': 'file',
  '1': 'link',
  '2': 'symlink',
  '3': 'character-device',
  '4': 'block-device',
  '5': 'directory',
  '6': 'fifo',
  '7': 'contiguous-file',
};

/** Types whose size field does not announce data (as in Go's archive/tar). */
const HEADER_ONLY = new Set<TarEntryType>([
  'link',
  'symlink',
  'character-device',
  'block-device',
  'directory',
  'fifo',
]);

interface Extended {
  flag: 'x' | 'g' | 'L' | 'K';
  data: Buffer;
  filled: number;
}

function padding(size: number): number {
  return (BLOCK - (size % BLOCK)) % BLOCK;
}

/** A NUL-terminated name field as a byte string. */
function text(b: Buffer, off: number, len: number): string {
  let end = off;
  const limit = off + len;
  while (end < limit && b[end] !== 0) end++;
  return b.toString('latin1', off, end);
}

/** A byte-string name as text (UTF-8 where it is, replacement characters where not). */
export function displayName(name: string): string {
  return Buffer.from(name, 'latin1').toString('utf8');
}

export class TarReader {
  private state: State = 'header';
  /** A header split across chunks is assembled here. */
  private readonly block = Buffer.alloc(BLOCK);
  private blockFill = 0;
  /** Data bytes left of the current entry or extended header. */
  private remaining = 0;
  /** Data bytes of the current entry (its padding follows them). */
  private entrySize = 0;
  private paddingLeft = 0;
  private body?: TarBody;
  private extended?: Extended;
  /** Records of the pax header that applies to the next entry. */
  private pax?: Map<string, Buffer>;
  /** Records of global pax headers, applied to every later entry. */
  private readonly globalPax = new Map<string, Buffer>();
  private longName?: string;
  private longLink?: string;
  /** A zero block was read: another one ends the archive. */
  private sawZeroBlock = false;
  /** The entry being read (for errors). */
  private current?: string;
  private paused = false;

  constructor(private readonly onEntry: (header: TarHeader) => TarEntryResult) {}

  /**
   * Reads `chunk`. Returns a promise when the entry callback had to wait;
   * the next write must come after it settles. The chunk is not kept once
   * this (or that promise) is done.
   */
  write(chunk: Buffer): Promise<void> | undefined {
    if (this.paused) throw new Error('TarReader.write called while paused');
    let off = 0;
    const length = chunk.length;
    while (off < length) {
      switch (this.state) {
        case 'end':
          return undefined;
        case 'data': {
          const n = Math.min(this.remaining, length - off);
          this.body?.write(chunk.subarray(off, off + n));
          off += n;
          this.remaining -= n;
          if (this.remaining === 0) this.endEntry();
          break;
        }
        case 'padding': {
          const n = Math.min(this.paddingLeft, length - off);
          off += n;
          this.paddingLeft -= n;
          if (this.paddingLeft === 0) this.state = 'header';
          break;
        }
        case 'extended': {
          const ext = this.extended!;
          const n = Math.min(this.remaining, length - off);
          chunk.copy(ext.data, ext.filled, off, off + n);
          ext.filled += n;
          off += n;
          this.remaining -= n;
          if (this.remaining === 0) {
            this.extended = undefined;
            this.applyExtended(ext);
            this.skipPadding(ext.data.length);
          }
          break;
        }
        case 'header': {
          let block: Buffer;
          let at: number;
          if (this.blockFill === 0 && length - off >= BLOCK) {
            block = chunk;
            at = off;
            off += BLOCK;
          } else {
            const n = Math.min(BLOCK - this.blockFill, length - off);
            chunk.copy(this.block, this.blockFill, off, off + n);
            this.blockFill += n;
            off += n;
            if (this.blockFill < BLOCK) break;
            this.blockFill = 0;
            block = this.block;
            at = 0;
          }
          const result = this.readHeader(block, at);
          if (result instanceof Promise) {
            this.paused = true;
            const rest = chunk.subarray(off);
            return result.then((body) => {
              this.paused = false;
              this.startData(body);
              return this.write(rest);
            });
          }
          if (result !== NOT_AN_ENTRY) this.startData(result);
          break;
        }
      }
    }
    return undefined;
  }

  /** The input ended: throws unless it ended between entries. */
  end(): void {
    if (this.state === 'end') return;
    if (this.state === 'header' && this.blockFill === 0) return;
    const where =
      this.state === 'header' || this.current === undefined
        ? 'a header'
        : `entry ${JSON.stringify(displayName(this.current))}`;
    throw new TarFormatError(`the archive ends in the middle of ${where}`);
  }

  private startData(body: TarBody | undefined): void {
    this.body = body;
    if (this.remaining === 0) this.endEntry();
    else this.state = 'data';
  }

  private endEntry(): void {
    const body = this.body;
    this.body = undefined;
    const size = this.entrySize;
    body?.end();
    this.skipPadding(size);
  }

  private skipPadding(size: number): void {
    this.paddingLeft = padding(size);
    this.state = this.paddingLeft === 0 ? 'header' : 'padding';
  }

  private fail(why: string): TarFormatError {
    return new TarFormatError(why);
  }

  /** Returns the entry callback's result, or NOT_AN_ENTRY for zero and extended headers. */
  private readHeader(b: Buffer, at: number): TarEntryResult | typeof NOT_AN_ENTRY {
    this.current = undefined;
    // The checksum counts its own field as eight spaces.
    let unsigned = 8 * 0x20;
    for (let i = at; i < at + 148; i++) unsigned += b[i];
    for (let i = at + 156; i < at + BLOCK; i++) unsigned += b[i];
    if (unsigned === 8 * 0x20 && allZero(b, at + 148, 8)) {
      // A zero block: two in a row end the archive.
      if (this.sawZeroBlock) this.state = 'end';
      this.sawZeroBlock = true;
      return NOT_AN_ENTRY;
    }
    if (this.sawZeroBlock) throw this.fail('a zero block is followed by another header');
    const recorded = this.octal(b, at + 148, 8, 'checksum');
    // Some old writers summed signed bytes.
    if (recorded !== unsigned && recorded !== signedSum(b, at)) {
      throw this.fail(
        `a header's checksum is wrong (${recorded} recorded, ${unsigned} computed): not a tar archive, or a corrupt one`,
      );
    }
    const flag = String.fromCharCode(b[at + 156]);
    let size = this.octal(b, at + 124, 12, 'size');
    if (flag === 'x' || flag === 'g' || flag === 'L' || flag === 'K') {
      if (size > MAX_EXTENDED_HEADER) {
        throw this.fail(
          `an extended header of type '${flag}' is ${size} bytes, over the ${MAX_EXTENDED_HEADER} allowed`,
        );
      }
      this.remaining = size;
      const ext: Extended = { flag, data: Buffer.alloc(size), filled: 0 };
      if (size === 0) {
        this.applyExtended(ext);
        return NOT_AN_ENTRY;
      }
      this.extended = ext;
      this.state = 'extended';
      return NOT_AN_ENTRY;
    }

    const versionPosix = startsWith(b, at + 257, USTAR_POSIX);
    let name = text(b, at, 100);
    if (versionPosix && b[at + 345] !== 0) {
      // star's variant keeps atime/ctime after a 131-byte prefix and ends with "tar\0".
      const star = startsWith(b, at + 508, STAR_TRAILER);
      name = `${text(b, at + 345, star ? 131 : 155)}/${name}`;
    }
    let linkname = text(b, at + 157, 100);
    let mode = this.octal(b, at + 100, 8, 'mode');
    let uid = this.octal(b, at + 108, 8, 'uid');
    let gid = this.octal(b, at + 116, 8, 'gid');
    let mtime = this.octal(b, at + 136, 12, 'mtime', true);
    const devmajor = this.octal(b, at + 329, 8, 'devmajor');
    const devminor = this.octal(b, at + 337, 8, 'devminor');

    if (this.longName !== undefined) name = this.longName;
    if (this.longLink !== undefined) linkname = this.longLink;
    this.longName = this.longLink = undefined;
    let xattrs: Map<string, Buffer> | undefined;
    const pax = this.mergedPax();
    if (pax) {
      for (const [key, value] of pax) {
        switch (key) {
          case 'path':
            name = value.toString('latin1');
            break;
          case 'linkpath':
            linkname = value.toString('latin1');
            break;
          case 'size':
            size = this.decimal(key, value);
            break;
          case 'uid':
            uid = this.decimal(key, value);
            break;
          case 'gid':
            gid = this.decimal(key, value);
            break;
          case 'mtime':
            mtime = this.paxTime(value);
            break;
          default:
            if (key.startsWith(XATTR_PREFIX)) {
              (xattrs ??= new Map()).set(key.slice(XATTR_PREFIX.length), value);
            } else if (key.startsWith('GNU.sparse.')) {
              throw this.fail(
                `entry ${JSON.stringify(displayName(name))} is a GNU sparse file, which berth does not unpack`,
              );
            }
        }
      }
    }
    if (flag === 'S')
      throw this.fail(
        `entry ${JSON.stringify(displayName(name))} is a GNU sparse file, which berth does not unpack`,
      );
    let type = TYPES[flag] ?? 'unsupported';
    if (type === 'file' && name.endsWith('/')) type = 'directory';
    if (HEADER_ONLY.has(type)) size = 0;
    mode &= 0o7777;

    this.current = name;
    this.remaining = size;
    this.entrySize = size;
    return this.onEntry({
      name,
      type,
      typeflag: flag,
      mode,
      uid,
      gid,
      size,
      mtime,
      linkname,
      devmajor,
      devminor,
      xattrs,
    });
  }

  private mergedPax(): Map<string, Buffer> | undefined {
    const own = this.pax;
    this.pax = undefined;
    if (this.globalPax.size === 0) return own;
    const merged = new Map(this.globalPax);
    // An empty value in an entry's own header removes the global one.
    for (const [key, value] of own ?? []) {
      if (value.length === 0) merged.delete(key);
      else merged.set(key, value);
    }
    return merged;
  }

  private applyExtended(ext: Extended): void {
    switch (ext.flag) {
      case 'L':
        this.longName = text(ext.data, 0, ext.data.length);
        break;
      case 'K':
        this.longLink = text(ext.data, 0, ext.data.length);
        break;
      case 'x':
        this.pax = this.paxRecords(ext.data);
        break;
      case 'g':
        for (const [key, value] of this.paxRecords(ext.data)) {
          // A name, link or size for every later entry would make no sense.
          if (key === 'path' || key === 'linkpath' || key === 'size') continue;
          if (value.length === 0) this.globalPax.delete(key);
          else this.globalPax.set(key, value);
        }
        break;
    }
  }

  /** pax records, "LENGTH key=value\n" each; values stay bytes (xattrs may be binary). */
  private paxRecords(data: Buffer): Map<string, Buffer> {
    const records = new Map<string, Buffer>();
    let off = 0;
    while (off < data.length) {
      // Some writers pad the header with NULs.
      if (data[off] === 0) break;
      const space = data.indexOf(0x20, off);
      const lengthText = space === -1 ? '' : data.toString('latin1', off, space);
      const length = /^[0-9]{1,7}$/.test(lengthText) ? Number(lengthText) : NaN;
      const end = off + length;
      if (!(length > 0) || end > data.length || data[end - 1] !== 0x0a) {
        throw this.fail(`a pax header has a malformed record at byte ${off}`);
      }
      const eq = data.indexOf(0x3d, space + 1);
      if (eq === -1 || eq >= end - 1) throw this.fail(`a pax header has a record without '=' at byte ${off}`);
      records.set(data.toString('utf8', space + 1, eq), data.subarray(eq + 1, end - 1));
      off = end;
    }
    return records;
  }

  private decimal(key: string, value: Buffer): number {
    const s = value.toString('latin1');
    const n = /^[0-9]{1,16}$/.test(s) ? Number(s) : NaN;
    if (!Number.isSafeInteger(n)) throw this.fail(`a pax header has an invalid ${key}: ${JSON.stringify(s)}`);
    return n;
  }

  private paxTime(value: Buffer): number {
    const s = value.toString('latin1');
    const n = /^-?[0-9]{1,16}(\.[0-9]{0,12})?$/.test(s) ? Number(s) : NaN;
    if (!Number.isFinite(n)) throw this.fail(`a pax header has an invalid mtime: ${JSON.stringify(s)}`);
    return n;
  }

  /**
   * A numeric header field: octal digits, optionally padded with spaces or
   * NULs (anything after a NUL is ignored, as Go does), or GNU base-256 when
   * the first byte's high bit is set.
   */
  private octal(b: Buffer, off: number, len: number, field: string, allowNegative = false): number {
    const end = off + len;
    if (b[off] & 0x80) {
      const negative = b[off] === 0xff;
      if (negative && !allowNegative) throw this.fail(`a header has a negative ${field}`);
      let value = negative ? 0 : b[off] & 0x7f;
      for (let i = off + 1; i < end; i++) value = value * 256 + (negative ? 0xff - b[i] : b[i]);
      if (negative) value = -(value + 1);
      if (!Number.isSafeInteger(value)) throw this.fail(`a header's ${field} is too large`);
      return value;
    }
    let i = off;
    while (i < end && (b[i] === 0x20 || b[i] === 0)) i++;
    let value = 0;
    for (; i < end; i++) {
      const c = b[i];
      if (c < 0x30 || c > 0x37) break;
      value = value * 8 + (c - 0x30);
    }
    if (i < end && b[i] !== 0) {
      for (; i < end && b[i] !== 0; i++) {
        if (b[i] !== 0x20) throw this.fail(`a header's ${field} field is not an octal number`);
      }
    }
    if (!Number.isSafeInteger(value)) throw this.fail(`a header's ${field} is too large`);
    return value;
  }
}

const NOT_AN_ENTRY = Symbol('not an entry');
/** Magic and version of ustar and pax headers (GNU's are "ustar  \0"). */
const USTAR_POSIX = Buffer.from('ustar\x0000', 'latin1');
const STAR_TRAILER = Buffer.from('tar\0', 'latin1');

function startsWith(b: Buffer, off: number, expected: Buffer): boolean {
  for (let i = 0; i < expected.length; i++) if (b[off + i] !== expected[i]) return false;
  return true;
}

function signedSum(b: Buffer, at: number): number {
  let sum = 8 * 0x20;
  for (let i = at; i < at + BLOCK; i++) {
    if (i >= at + 148 && i < at + 156) continue;
    sum += b[i] < 128 ? b[i] : b[i] - 256;
  }
  return sum;
}

function allZero(b: Buffer, off: number, len: number): boolean {
  for (let i = off; i < off + len; i++) if (b[i] !== 0) return false;
  return true;
}
