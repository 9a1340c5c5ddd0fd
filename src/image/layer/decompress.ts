/**
 * Layer decompression: gzip, zstd or none, chosen by the stream's magic bytes
 * (media types lie often enough, e.g. docker's ".tar.gzip" for plain tars).
 */
import { PassThrough, Transform, type Readable, type TransformCallback } from 'node:stream';
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
 * A decompressing transform for the sniffed compression. `onConsumed` is
 * told each input chunk once the decompressor has read all of it and keeps
 * no reference (so its memory may be reused); a plain tar passes its chunks
 * on as they are, so they are never reported.
 */
export function decompressor(compression: Compression, onConsumed?: (chunk: Buffer) => void): Transform {
  if (compression === 'none') return new PassThrough();
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
