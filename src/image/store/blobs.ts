/**
 * Content-addressed blobs under `<dir>/sha256/<hex>`. A blob is ingested into
 * a temp file on the same filesystem, its size and digest checked while it
 * streams, fsynced and renamed into place: a blob file that exists is whole.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, open, readFile, readdir, rename, rm, stat, unlink, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { InvalidArgumentError, NotFoundError, errnoCode } from '../../errors.js';
import { fsyncDir } from '../../util/atomic-file.js';
import { ContentMismatchError } from '../layer/errors.js';
import { leftBehind, tempName } from './temp.js';
import type { Digest } from '../types.js';

const DIGEST = /^sha256:([a-f0-9]{64})$/;

/** The hex of a sha256 digest; throws INVALID_ARGUMENT for anything else. */
export function digestHex(digest: string): string {
  const m = DIGEST.exec(digest);
  if (!m)
    throw new InvalidArgumentError(`unsupported digest ${JSON.stringify(digest)}: berth stores sha256 only`);
  return m[1];
}

export function sha256Of(data: Uint8Array): Digest {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

/** Counts and hashes, failing as soon as more than `limit` bytes arrive. */
class VerifyingStream extends Transform {
  private readonly hash = createHash('sha256');
  bytes = 0;
  constructor(
    private readonly limit: number | undefined,
    private readonly digest: Digest,
  ) {
    super();
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, callback: (err?: Error) => void): void {
    this.bytes += chunk.length;
    if (this.limit !== undefined && this.bytes > this.limit) {
      callback(
        new ContentMismatchError(`blob ${this.digest}: more than the announced ${this.limit} bytes arrived`),
      );
      return;
    }
    this.hash.update(chunk);
    this.push(chunk);
    callback();
  }
  result(): Digest {
    return `sha256:${this.hash.digest('hex')}`;
  }
}

/**
 * Writes every chunk to the file. (An fs WriteStream with autoClose off never
 * emits 'close', which stream.pipeline waits for.)
 */
async function writeAll(handle: FileHandle, chunks: AsyncIterable<Buffer>): Promise<void> {
  for await (const chunk of chunks) {
    for (let off = 0; off < chunk.length;) {
      off += (await handle.write(chunk, off, chunk.length - off)).bytesWritten;
    }
  }
}

export class BlobStore {
  readonly dir: string;
  readonly ingestDir: string;

  constructor(imagesDir: string) {
    this.dir = join(imagesDir, 'blobs', 'sha256');
    this.ingestDir = join(imagesDir, 'ingest');
  }

  async init(): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    await mkdir(this.ingestDir, { recursive: true, mode: 0o700 });
    // Half-written ingests of processes that died: never visible, safe to drop.
    // Another live berth process (an import beside the daemon) keeps its own.
    for (const name of await readdir(this.ingestDir)) {
      if (leftBehind(name)) await rm(join(this.ingestDir, name), { recursive: true, force: true });
    }
  }

  path(digest: Digest): string {
    return join(this.dir, digestHex(digest));
  }

  async has(digest: Digest): Promise<boolean> {
    try {
      return (await stat(this.path(digest))).isFile();
    } catch (err) {
      if (errnoCode(err) === 'ENOENT') return false;
      throw err;
    }
  }

  async size(digest: Digest): Promise<number> {
    return (await stat(this.path(digest))).size;
  }

  /** A fresh temp path in the ingest dir for `digest` (for a writer elsewhere, e.g. a layer worker). */
  tempPath(digest: Digest): string {
    return join(this.ingestDir, tempName(digestHex(digest)));
  }

  /** Moves a verified, fsynced temp file into place as `digest`. */
  async commitTemp(temp: string, digest: Digest): Promise<void> {
    try {
      await rename(temp, this.path(digest));
    } catch (err) {
      await unlink(temp).catch(() => undefined);
      throw err;
    }
    await fsyncDir(this.dir);
  }

  /**
   * Streams `body` in; resolves once the blob is durable under `digest`.
   * Size (when known) and digest are verified; on any failure nothing stays.
   */
  async put(
    digest: Digest,
    expectedSize: number | undefined,
    body: Readable,
    signal?: AbortSignal,
  ): Promise<void> {
    const final = this.path(digest);
    const temp = join(this.ingestDir, tempName(digestHex(digest)));
    const verify = new VerifyingStream(expectedSize, digest);
    const handle = await open(temp, 'wx', 0o600);
    try {
      await pipeline(body, verify, (chunks: AsyncIterable<Buffer>) => writeAll(handle, chunks), { signal });
      if (expectedSize !== undefined && verify.bytes !== expectedSize) {
        throw new ContentMismatchError(
          `blob ${digest}: ${verify.bytes} bytes arrived, ${expectedSize} were announced`,
        );
      }
      const actual = verify.result();
      if (actual !== digest) {
        throw new ContentMismatchError(`blob ${digest}: the content has digest ${actual}`);
      }
      await handle.sync();
    } catch (err) {
      body.destroy();
      await handle.close().catch(() => undefined);
      await unlink(temp).catch(() => undefined);
      throw err;
    }
    await handle.close();
    try {
      await rename(temp, final);
    } catch (err) {
      await unlink(temp).catch(() => undefined);
      throw err;
    }
    await fsyncDir(this.dir);
  }

  /**
   * Streams in a blob whose digest is not known beforehand (a docker-save
   * layer tar); it is stored under the digest computed while it flowed.
   */
  async ingest(body: Readable, signal?: AbortSignal): Promise<{ digest: Digest; size: number }> {
    const hash = createHash('sha256');
    let size = 0;
    const temp = join(this.ingestDir, tempName('unknown'));
    const handle = await open(temp, 'wx', 0o600);
    try {
      await pipeline(
        body,
        async (chunks: AsyncIterable<Buffer>) => {
          const hashing = (async function* () {
            for await (const chunk of chunks) {
              hash.update(chunk);
              size += chunk.length;
              yield chunk;
            }
          })();
          await writeAll(handle, hashing);
        },
        { signal },
      );
      await handle.sync();
    } catch (err) {
      await handle.close().catch(() => undefined);
      await unlink(temp).catch(() => undefined);
      throw err;
    }
    await handle.close();
    const digest = `sha256:${hash.digest('hex')}`;
    await this.commitTemp(temp, digest);
    return { digest, size };
  }

  /** Stores bytes already in memory (manifests, configs). */
  async putBytes(digest: Digest, data: Uint8Array): Promise<void> {
    const actual = sha256Of(data);
    if (actual !== digest) throw new ContentMismatchError(`blob ${digest}: the content has digest ${actual}`);
    if (await this.has(digest)) return;
    await this.put(digest, data.length, Readable.from([Buffer.from(data)]));
  }

  async read(digest: Digest): Promise<Buffer> {
    try {
      return await readFile(this.path(digest));
    } catch (err) {
      if (errnoCode(err) === 'ENOENT') throw new NotFoundError(`blob ${digest} is not in the image store`);
      throw err;
    }
  }

  open(digest: Digest): Readable {
    return createReadStream(this.path(digest));
  }

  async remove(digest: Digest): Promise<void> {
    await unlink(this.path(digest)).catch((err: unknown) => {
      if (errnoCode(err) !== 'ENOENT') throw err;
    });
  }

  async list(): Promise<Digest[]> {
    const names = await readdir(this.dir);
    return names.filter((n) => /^[a-f0-9]{64}$/.test(n)).map((n) => `sha256:${n}`);
  }
}
