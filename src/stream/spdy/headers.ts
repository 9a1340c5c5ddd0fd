/**
 * SPDY/3 header blocks: a 32-bit count, then (32-bit length, name, 32-bit
 * length, value) pairs, names lower-case, several values of one name joined
 * by NUL. Each direction of a connection compresses its blocks with one zlib
 * stream seeded with the SPDY/3 dictionary, flushed (Z_SYNC_FLUSH) after each
 * block; the contexts live as long as the connection.
 */
import zlib from 'node:zlib';
import { SPDY3_DICTIONARY } from './dictionary.js';
import { SpdyProtocolError } from './frames.js';

/** Header name → values (a name may repeat, e.g. X-Stream-Protocol-Version). */
export type SpdyHeaders = Map<string, string[]>;

const MAX_HEADER_BLOCK = 256 * 1024;
const MAX_HEADER_COUNT = 1024;

export function encodeHeaderBlock(headers: Iterable<[string, string | string[]]>): Buffer {
  const parts: Buffer[] = [];
  let count = 0;
  for (const [name, value] of headers) {
    const values = Array.isArray(value) ? value : [value];
    const nameBytes = Buffer.from(name.toLowerCase(), 'utf8');
    const valueBytes = Buffer.from(values.join('\0'), 'utf8');
    const lengths = Buffer.allocUnsafe(4);
    lengths.writeUInt32BE(nameBytes.length);
    const valueLength = Buffer.allocUnsafe(4);
    valueLength.writeUInt32BE(valueBytes.length);
    parts.push(lengths, nameBytes, valueLength, valueBytes);
    count++;
  }
  const head = Buffer.allocUnsafe(4);
  head.writeUInt32BE(count);
  return Buffer.concat([head, ...parts]);
}

export function decodeHeaderBlock(block: Buffer): SpdyHeaders {
  const headers: SpdyHeaders = new Map();
  let offset = 0;
  const u32 = (): number => {
    if (offset + 4 > block.length) throw new SpdyProtocolError('SPDY header block is truncated');
    const v = block.readUInt32BE(offset);
    offset += 4;
    return v;
  };
  const bytes = (n: number): string => {
    if (offset + n > block.length) throw new SpdyProtocolError('SPDY header block is truncated');
    const s = block.toString('utf8', offset, offset + n);
    offset += n;
    return s;
  };
  const count = u32();
  if (count > MAX_HEADER_COUNT) throw new SpdyProtocolError(`SPDY header block has ${count} headers`);
  for (let i = 0; i < count; i++) {
    const name = bytes(u32()).toLowerCase();
    if (!name) throw new SpdyProtocolError('SPDY header block has an empty header name');
    const values = bytes(u32()).split('\0');
    const existing = headers.get(name);
    if (existing) existing.push(...values);
    else headers.set(name, values);
  }
  if (offset !== block.length) throw new SpdyProtocolError('SPDY header block has trailing bytes');
  return headers;
}

/** Adler-32 of a buffer (zlib's FDICT names the dictionary by it). */
export function adler32(data: Buffer): number {
  let a = 1;
  let b = 0;
  for (let i = 0; i < data.length;) {
    // 3800 bytes keep the sums below 2^31 between reductions.
    const end = Math.min(i + 3800, data.length);
    for (; i < end; i++) {
      a += data[i];
      b += a;
    }
    a %= 65521;
    b %= 65521;
  }
  return ((b << 16) | a) >>> 0;
}

const SYNC_FLUSH_MARKER = Buffer.from([0x00, 0x00, 0x00, 0xff, 0xff]);

/** zlib header announcing a preset dictionary (CMF 0x78, FLG 0xbb: FDICT set, check bits valid). */
function zlibDictionaryHeader(): Buffer {
  const out = Buffer.from([0x78, 0xbb, 0, 0, 0, 0]);
  out.writeUInt32BE(adler32(SPDY3_DICTIONARY), 2);
  return out;
}

/**
 * One connection's pair of header compression contexts.
 *
 * Outgoing blocks are written as stored (uncompressed) deflate blocks: a
 * valid continuation of one zlib stream that every SPDY peer inflates, made
 * synchronously, and no compression oracle over header values. berth only
 * sends small blocks (SYN_REPLY), so nothing is lost.
 *
 * Incoming blocks go through one long-lived zlib inflate stream. Node has no
 * synchronous step for a persistent stream, so decompress is asynchronous (one
 * thread-pool trip per block) and the connection keeps frame order around it.
 */
export class HeaderCodec {
  private started = false;
  private readonly inflate = zlib.createInflate({
    dictionary: SPDY3_DICTIONARY,
    maxOutputLength: MAX_HEADER_BLOCK,
    // Every write hands out all it can: one thread-pool trip per frame, no separate flush.
    flush: zlib.constants.Z_SYNC_FLUSH,
  });
  private failure?: Error;

  constructor() {
    this.inflate.on('error', (err: Error) => {
      this.failure = err;
    });
  }

  compress(headers: Iterable<[string, string | string[]]>): Buffer {
    const plain = encodeHeaderBlock(headers);
    const parts: Buffer[] = [];
    if (!this.started) {
      parts.push(zlibDictionaryHeader());
      this.started = true;
    }
    for (let offset = 0; offset < plain.length; offset += 0xffff) {
      const length = Math.min(0xffff, plain.length - offset);
      const block = Buffer.allocUnsafe(5);
      block[0] = 0; // BFINAL 0, BTYPE 00 (stored), padded to the byte
      block.writeUInt16LE(length, 1);
      block.writeUInt16LE(~length & 0xffff, 3);
      parts.push(block, plain.subarray(offset, offset + length));
    }
    // The sync-flush marker (an empty stored block): inflaters such as Go's
    // hand out a block's data only when they reach it.
    parts.push(SYNC_FLUSH_MARKER);
    return Buffer.concat(parts);
  }

  decompress(compressed: Buffer): Promise<SpdyHeaders> {
    if (compressed.length === 0) return Promise.resolve(new Map());
    return new Promise((resolve, reject) => {
      const out: Buffer[] = [];
      const onData = (chunk: Buffer) => out.push(chunk);
      const fail = (err: Error) => {
        this.inflate.off('data', onData);
        reject(new SpdyProtocolError(`SPDY header block does not decompress: ${err.message}`));
      };
      if (this.failure) return fail(this.failure);
      this.inflate.once('error', fail);
      this.inflate.on('data', onData);
      this.inflate.write(compressed, () => {
        this.inflate.off('data', onData);
        this.inflate.off('error', fail);
        if (this.failure) return fail(this.failure);
        try {
          resolve(decodeHeaderBlock(Buffer.concat(out)));
        } catch (err) {
          reject(err instanceof Error ? err : new Error(String(err)));
        }
      });
    });
  }

  close(): void {
    this.inflate.close();
  }
}

/** First value of a header, case-insensitive name. */
export function headerValue(headers: SpdyHeaders, name: string): string | undefined {
  return headers.get(name.toLowerCase())?.[0];
}
