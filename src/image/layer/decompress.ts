/**
 * Layer decompression: gzip, zstd or none, chosen by the stream's magic bytes
 * (media types lie often enough, e.g. docker's ".tar.gzip" for plain tars).
 */
import type { Readable, Transform, TransformCallback } from 'node:stream';
import { createGunzip, createZstdDecompress } from 'node:zlib';

export type Compression = 'gzip' | 'zstd' | 'none';

const GZIP_MAGIC = [0x1f, 0x8b];
const ZSTD_MAGIC = [0x28, 0xb5, 0x2f, 0xfd];

export function sniffCompression(head: Uint8Array): Compression {
  const starts = (magic: number[]) => magic.every((b, i) => head[i] === b);
  if (starts(GZIP_MAGIC)) return 'gzip';
  if (starts(ZSTD_MAGIC)) return 'zstd';
  return 'none';
}

/** Compression a media type announces, if it announces one. */
export function compressionOfMediaType(mediaType: string): Compression | undefined {
  if (/gzip$/.test(mediaType)) return 'gzip';
  if (/zstd$/.test(mediaType)) return 'zstd';
  if (/\.tar$/.test(mediaType)) return 'none';
  return undefined;
}

/** Reads up to `n` bytes without consuming them (they are unshifted back). */
export function peek(stream: Readable, n: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let length = 0;
    const finish = () => {
      stream.off('readable', onReadable);
      stream.off('end', finish);
      stream.off('error', onError);
      const all = Buffer.concat(chunks);
      if (all.length > 0) stream.unshift(all);
      resolve(all.subarray(0, n));
    };
    const onError = (err: Error) => {
      stream.off('readable', onReadable);
      stream.off('end', finish);
      reject(err);
    };
    const onReadable = () => {
      let chunk: Buffer | null;
      while (length < n && (chunk = stream.read() as Buffer | null) !== null) {
        chunks.push(chunk);
        length += chunk.length;
      }
      if (length >= n) finish();
    };
    stream.on('readable', onReadable);
    stream.once('end', finish);
    stream.once('error', onError);
    onReadable();
  });
}

/** Output chunk size: zlib's 16 KiB default means a file write and a callback per 16 KiB. */
const CHUNK = 256 * 1024;

/**
 * A decompressing transform. `onConsumed` is told each input chunk once the
 * decompressor has read all of it and keeps no reference (so its memory may
 * be reused).
 */
function decompressor(
  compression: Exclude<Compression, 'none'>,
  onConsumed?: (chunk: Buffer) => void,
): Transform {
  const inflate =
    compression === 'gzip' ? createGunzip({ chunkSize: CHUNK }) : createZstdDecompress({ chunkSize: CHUNK });
  if (onConsumed) {
    // zlib calls back for a chunk when its input is used up; output lives in buffers of its own.
    const transform = inflate._transform.bind(inflate);
    inflate._transform = (chunk: Buffer, encoding: BufferEncoding, callback: TransformCallback) => {
      transform(chunk, encoding, (err?: Error | null, data?: unknown) => {
        onConsumed(chunk);
        callback(err, data);
      });
    };
  }
  return inflate;
}

/**
 * `source` decompressed as its first bytes say (a plain tar is `source`
 * itself, whose chunks are then never reported to `onConsumed`). Not
 * pipeline(): one whose source is destroyed after it ended may never settle;
 * this stream ends or fails whichever way the source stops (a source error
 * destroys it with that error), so a `for await` over it always finishes.
 */
export async function decompressed(
  source: Readable,
  onConsumed?: (chunk: Buffer) => void,
): Promise<Readable> {
  const compression = sniffCompression(await peek(source, 4));
  if (compression === 'none') return source;
  const inflate = decompressor(compression, onConsumed);
  source.once('error', (err) => inflate.destroy(err));
  return source.pipe(inflate);
}
