/**
 * Unpacked layers under `<dir>/<chainId hex>/diff`, each ready to be an
 * overlayfs lower directory. A layer is unpacked into a temp dir beside its
 * final place, flushed to disk and renamed when complete, so a layer
 * directory that exists is whole, after a power loss too; two requests for
 * the same layer share one unpack.
 */
import { createHash } from 'node:crypto';
import { mkdir, rename, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { errnoCode } from '../../errors.js';
import type { Logger } from '../../log.js';
import { fsyncDir } from '../../util/atomic-file.js';
import { FilesystemFlusher, sameFilesystem } from '../../util/syncfs.js';
import { runIngest, type BlobSpec, type IngestSource } from '../layer/ingest.js';
import type { Digest, LayerRecord } from '../types.js';
import { digestHex } from './blobs.js';
import { DigestDirs } from './digest-dirs.js';

/** chainID per the OCI image spec. */
export function chainIdOf(parent: Digest | undefined, diffId: Digest): Digest {
  if (parent === undefined) return diffId;
  return `sha256:${createHash('sha256').update(`${parent} ${diffId}`).digest('hex')}`;
}

/** chainIDs of a layer list, lowest first. */
export function chainIds(diffIds: readonly Digest[]): Digest[] {
  const out: Digest[] = [];
  for (const d of diffIds) out.push(chainIdOf(out.at(-1), d));
  return out;
}

/** How an unpack reports its progress to the caller. */
export interface UnpackOptions {
  signal?: AbortSignal;
  blob?: LayerBlob;
  /** Compressed bytes as they are received. */
  onBytes?: (n: number) => void;
  /** The bytes are all read, verified and written; only the flush to disk and the commit remain. */
  onWritten?: () => void;
}

/** A blob to verify (and, with `spec.temp`, store) from the bytes a layer is unpacked from. */
export interface LayerBlob {
  spec: BlobSpec;
  /** Moves the verified temp file into the blob store (nothing when there is none). */
  commit(): Promise<void>;
}

export interface LayerStoreOptions {
  /**
   * Flush each unpacked layer's files (syncfs) before the rename that makes it
   * visible. Without it the rename can reach the disk before the data: after a
   * power loss the layer looks whole but holds empty files, and nothing would
   * ever unpack it again (containerd's `image_pull_with_sync_fs` problem).
   */
  syncLayers: boolean;
}

export class LayerStore extends DigestDirs {
  private readonly inflight = new Map<Digest, Promise<string>>();
  /** Layers finishing together share one syncfs (every temp dir is on this dir's filesystem). */
  private readonly flusher: FilesystemFlusher;

  constructor(
    dir: string,
    log: Logger,
    private readonly options: LayerStoreOptions = { syncLayers: true },
  ) {
    super(dir, log, 'layer');
    this.flusher = new FilesystemFlusher(dir);
  }

  /** The overlay lower directory of a layer. */
  diffDir(chainId: Digest): string {
    return join(this.treeDir(chainId), 'diff');
  }

  has(chainId: Digest): Promise<boolean> {
    return this.isDir(this.diffDir(chainId));
  }

  /** True while this process is unpacking the layer. */
  busy(chainId: Digest): boolean {
    return this.inflight.has(chainId);
  }

  /**
   * Ensures the layer is unpacked; `open` supplies the blob (a stream, or
   * the stored blob file) when it must be. With `blob`, the same bytes are
   * also stored as that blob (verified, fsynced, then `blob.commit`ted)
   * before the layer becomes visible, whether or not it needs unpacking;
   * a `blob` without a temp file is only verified, and only when unpacked.
   * Resolves to the diff directory.
   */
  unpack(
    layer: Omit<LayerRecord, 'chainId'>,
    chainId: Digest,
    open: () => IngestSource,
    options: UnpackOptions = {},
  ): Promise<string> {
    const running = this.inflight.get(chainId);
    if (running) {
      // Nothing to keep: the bytes are not needed, the running unpack verifies its own.
      if (options.blob?.spec.temp === undefined) return running;
      return Promise.all([this.storeBlob(open(), options.blob, options), running]).then(([, dir]) => dir);
    }
    const pending = this.doUnpack(layer, chainId, open, options).finally(() => this.inflight.delete(chainId));
    this.inflight.set(chainId, pending);
    return pending;
  }

  private async storeBlob(source: IngestSource, blob: LayerBlob, options: UnpackOptions): Promise<void> {
    await runIngest({ blob: blob.spec }, source, { signal: options.signal, onBytes: options.onBytes });
    options.onWritten?.();
    await blob.commit();
  }

  private async doUnpack(
    layer: Omit<LayerRecord, 'chainId'>,
    chainId: Digest,
    open: () => IngestSource,
    options: UnpackOptions,
  ): Promise<string> {
    const final = this.treeDir(chainId);
    if (await this.has(chainId)) {
      if (options.blob?.spec.temp !== undefined) await this.storeBlob(open(), options.blob, options);
      return this.diffDir(chainId);
    }
    const temp = this.tempDir(digestHex(chainId).slice(0, 16));
    const started = Date.now();
    try {
      await mkdir(join(temp, 'diff'), { recursive: true, mode: 0o755 });
      await mkdir(join(temp, 'scratch'), { mode: 0o700 });
      // The layer's syncfs below flushes the blob's temp file too when both live on one
      // filesystem: the blob then waits for it instead of an fsync of its own.
      const blobTemp = options.blob?.spec.temp;
      const blobFlushedWithLayer =
        blobTemp !== undefined && this.options.syncLayers && (await sameFilesystem(dirname(blobTemp), temp));
      const { unpack: result } = await runIngest(
        {
          blob:
            options.blob &&
            (blobFlushedWithLayer ? { ...options.blob.spec, fsync: false } : options.blob.spec),
          unpack: {
            target: join(temp, 'diff'),
            scratch: join(temp, 'scratch'),
            name: layer.blobDigest,
            expectedDiffId: layer.diffId,
          },
        },
        open(),
        { signal: options.signal, log: this.log, onBytes: options.onBytes },
      );
      options.onWritten?.();
      await rm(join(temp, 'scratch'), { recursive: true, force: true });
      await writeFile(
        join(temp, 'layer.json'),
        JSON.stringify({
          chainId,
          diffId: layer.diffId,
          blobDigest: layer.blobDigest,
          tarBytes: result!.tarBytes,
        }),
      );
      const flushStarted = Date.now();
      if (this.options.syncLayers) await this.flusher.flush();
      const flushMs = Date.now() - flushStarted;
      // The blob before the layer: a layer on disk always has its blob.
      await options.blob?.commit();
      try {
        await rename(temp, final);
      } catch (err) {
        // Another process finished the same layer first: theirs is as good.
        if (errnoCode(err) !== 'ENOTEMPTY' && errnoCode(err) !== 'EEXIST') throw err;
        await rm(temp, { recursive: true, force: true });
      }
      await fsyncDir(this.dir);
      this.log.debug(
        { chainId, blob: layer.blobDigest, entries: result!.entries, ms: Date.now() - started, flushMs },
        'layer unpacked',
      );
      return this.diffDir(chainId);
    } catch (err) {
      await rm(temp, { recursive: true, force: true });
      throw err;
    }
  }
}
