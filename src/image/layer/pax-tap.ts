/**
 * Follows the tar headers of an uncompressed layer stream to recover PAX
 * `SCHILY.xattr.*` values as raw bytes. tar-stream decodes PAX values as
 * UTF-8, which mangles binary xattrs such as `security.capability`; this tap
 * sees the same bytes first and records, per entry (in tar-stream's entry
 * order), the exact values.
 */
const BLOCK = 512;
const LONG_HEADERS = new Set(['x', 'g', 'L', 'K']);

function decodeSize(field: Buffer): number {
  // Base-256 (GNU) when the high bit is set, else NUL/space-terminated octal.
  if (field[0] & 0x80) {
    let value = field[0] & 0x7f;
    for (let i = 1; i < field.length; i++) value = value * 256 + field[i];
    return value;
  }
  const text = field
    .toString('latin1')
    .replace(/[\0 ].*$/s, '')
    .trim();
  return text === '' ? 0 : parseInt(text, 8);
}

/** PAX records ("LEN key=value\n"), values kept as bytes. */
export function parsePaxRecords(data: Buffer): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  let off = 0;
  while (off < data.length) {
    const space = data.indexOf(0x20, off);
    if (space === -1) break;
    const len = parseInt(data.toString('latin1', off, space), 10);
    if (!(len > 0) || off + len > data.length) break;
    const record = data.subarray(space + 1, off + len - 1); // without the trailing newline
    const eq = record.indexOf(0x3d);
    if (eq !== -1) out.set(record.toString('utf8', 0, eq), Buffer.from(record.subarray(eq + 1)));
    off += len;
  }
  return out;
}

export class PaxXattrTap {
  private header = Buffer.alloc(0);
  private skip = 0;
  private capture?: { remaining: number; padding: number; chunks: Buffer[] };
  private pending?: Map<string, Buffer>;
  /** Raw SCHILY.xattr values (name without the prefix) per entry index. */
  private readonly byEntry = new Map<number, Map<string, Buffer>>();
  private entries = 0;

  /** Raw xattr value of entry `index` (0-based, in emit order), if the tap saw one. */
  value(index: number, name: string): Buffer | undefined {
    return this.byEntry.get(index)?.get(name);
  }

  write(chunk: Buffer): void {
    let off = 0;
    while (off < chunk.length) {
      if (this.skip > 0) {
        const n = Math.min(this.skip, chunk.length - off);
        this.skip -= n;
        off += n;
        continue;
      }
      if (this.capture) {
        const n = Math.min(this.capture.remaining, chunk.length - off);
        this.capture.chunks.push(chunk.subarray(off, off + n));
        this.capture.remaining -= n;
        off += n;
        if (this.capture.remaining === 0) {
          this.pending = parsePaxRecords(Buffer.concat(this.capture.chunks));
          this.skip = this.capture.padding;
          this.capture = undefined;
        }
        continue;
      }
      const n = Math.min(BLOCK - this.header.length, chunk.length - off);
      this.header = Buffer.concat([this.header, chunk.subarray(off, off + n)]);
      off += n;
      if (this.header.length < BLOCK) continue;
      const block = this.header;
      this.header = Buffer.alloc(0);
      this.onHeader(block);
    }
  }

  private onHeader(block: Buffer): void {
    if (block.every((b) => b === 0)) return; // end-of-archive padding
    const type = String.fromCharCode(block[156] || 0x30);
    let size = decodeSize(block.subarray(124, 136));
    const padded = (n: number) => Math.ceil(n / BLOCK) * BLOCK;
    if (type === 'x') {
      this.capture = { remaining: size, padding: padded(size) - size, chunks: [] };
      if (size === 0) {
        this.pending = new Map();
        this.capture = undefined;
      }
      return;
    }
    if (LONG_HEADERS.has(type)) {
      this.skip = padded(size);
      return;
    }
    // A real entry: the PAX header before it applies to it.
    const pax = this.pending;
    this.pending = undefined;
    const paxSize = pax?.get('size');
    if (paxSize) size = parseInt(paxSize.toString('latin1'), 10);
    if (pax) {
      const xattrs = new Map<string, Buffer>();
      for (const [key, value] of pax) {
        if (key.startsWith('SCHILY.xattr.')) xattrs.set(key.slice('SCHILY.xattr.'.length), value);
      }
      if (xattrs.size > 0) this.byEntry.set(this.entries, xattrs);
    }
    this.entries++;
    // tar-stream reads no data for directories, whatever their size says.
    this.skip = type === '5' ? 0 : padded(size);
  }
}
