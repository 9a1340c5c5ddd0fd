/**
 * The local image store: blobs, unpacked layers, OCI artifacts' file trees
 * and the image index, under `<root>/images`. Implements BlobSink for pulls
 * and imports.
 *
 * Crash safety: blobs and layers appear only by rename of complete content;
 * an image appears only when `commitImage` rewrites the index atomically,
 * after every blob and layer it needs is in place. A process killed at any
 * instant leaves at most temp files (removed at the next start) and complete
 * blobs/layers that the next pull reuses.
 *
 * An image needs its config and manifest blobs and every layer unpacked.
 * With `discardLayerBlobs` (CRI-O's way; containerd's `discard_unpacked_layers`)
 * no layer blob is kept: a pull verifies the bytes and unpacks them without
 * writing the blob, an import lets its blobs go once all its images are in
 * (`releaseLayerBlobs`), and a layer lost later comes back only by pulling again.
 * Without it every layer keeps its blob, from which a lost layer is unpacked.
 *
 * Several processes may use one store (the daemon, `berth image import`):
 * the index is read-modify-written under a lock file, and readers reload it
 * when its inode or mtime changes.
 */
import { watch, type FSWatcher } from 'node:fs';
import { readdir, readFile, rm, stat, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import {
  InvalidArgumentError,
  NotFoundError,
  UnavailableError,
  errnoCode,
  errorMessage,
} from '../../errors.js';
import type { Logger } from '../../log.js';
import { writeJsonAtomic } from '../../util/atomic-file.js';
import type {
  ArtifactCommit,
  BlobSink,
  Digest,
  ImageCommit,
  ImageConfigFile,
  ImageRecord,
  LayerRecord,
} from '../types.js';
import { ArtifactStore } from './artifacts.js';
import { BlobStore, digestHex } from './blobs.js';
import { LayerStore, chainIdOf, type UnpackOptions } from './layers.js';
import { FileLock } from './lock.js';
import type { DirectSource } from '../registry/http1.js';

/** An image as written in index.json (the config lives in the blob store). */
type StoredImage = Omit<ImageRecord, 'config'>;

interface IndexFile {
  version: 1;
  images: StoredImage[];
}

/** An artifact's stand-in for an image config: nothing to run, no user, no layers. */
const ARTIFACT_CONFIG: ImageConfigFile = Object.freeze({
  architecture: '',
  os: '',
  rootfs: Object.freeze({ type: 'layers', diff_ids: [] }),
}) as ImageConfigFile;

/** The blobs an image cannot be without: config, manifest (an artifact's config and files). */
function requiredBlobsOf(image: StoredImage): Digest[] {
  const all = [image.id, image.manifestDigest];
  if (image.artifact) all.push(image.artifact.configDigest, ...image.artifact.files.map((f) => f.blobDigest));
  return [...new Set(all)];
}

/** Every blob an image names: the required ones and its layers' (present or discarded). */
function blobsOf(image: StoredImage): Digest[] {
  return [...new Set([...requiredBlobsOf(image), ...image.layers.map((l) => l.blobDigest)])];
}

/**
 * Gives `tag` to the image `id` alone: another image holding it loses it
 * (keeping repo@digest when that was its last name).
 */
function claimTag(images: Map<Digest, StoredImage>, id: Digest, tag: string | undefined): void {
  if (!tag) return;
  for (const other of images.values()) {
    if (other.id === id || !other.repoTags.includes(tag)) continue;
    other.repoTags = other.repoTags.filter((t) => t !== tag);
    // Like CRI-O's "previous name": an image that loses its last name
    // keeps repo@digest, so crictl shows it as <none> and kubelet lists it.
    if (other.repoTags.length === 0 && other.repoDigests.length === 0) {
      other.repoDigests.push(`${tag.slice(0, tag.lastIndexOf(':'))}@${other.manifestDigest}`);
    }
  }
}

/** Unreferenced blobs and layers older than this are removed at start-up. */
const ORPHAN_GRACE_MS = 24 * 60 * 60 * 1000;

const INDEX_FILE = 'index.json';

/** How long an uncommitted blob or layer is protected from garbage collection. */
const TOUCH_TTL_MS = 60 * 60 * 1000;

export class ImageStore implements BlobSink {
  readonly imagesDir: string;
  readonly blobs: BlobStore;
  readonly layers: LayerStore;
  readonly artifacts: ArtifactStore;
  private readonly indexPath: string;
  private readonly lock: FileLock;
  private records = new Map<Digest, ImageRecord>();
  private stamp = '';
  /**
   * Set when the index may have changed under this process (another one's
   * import): inotify tells, so queries (ListImages, ImageStatus, every
   * CreateContainer's image lookup) skip a stat of their own, a trip through
   * the thread pool that a pull keeps busy. Without a watcher every query
   * checks the file.
   */
  private indexMaybeChanged = true;
  private indexWatcher?: FSWatcher;
  private reloading?: Promise<void>;
  /** Blobs and layers that uncommitted pulls/imports of this process rely on. */
  private readonly touched = new Map<string, number>();

  private constructor(
    root: string,
    private readonly log: Logger,
    syncLayers: boolean,
    private readonly discardLayerBlobs: boolean,
  ) {
    this.imagesDir = join(root, 'images');
    this.blobs = new BlobStore(this.imagesDir);
    this.layers = new LayerStore(join(this.imagesDir, 'layers'), log, { syncLayers });
    this.artifacts = new ArtifactStore(join(this.imagesDir, 'artifacts'), this.blobs, log);
    this.indexPath = join(this.imagesDir, INDEX_FILE);
    this.lock = new FileLock(join(this.imagesDir, 'index.lock'));
  }

  /**
   * Opens (creating) the store under `<root>/images` and reconciles it.
   * `sweepOrphans: false` keeps old unreferenced blobs (an import beside a
   * running daemon must not collect what the daemon's pulls may reuse).
   * `syncLayers` (default true): see LayerStoreOptions. `discardLayerBlobs`
   * (default false): keep no compressed layer blob once its layer is unpacked.
   */
  static async open(
    root: string,
    log: Logger,
    options: { sweepOrphans?: boolean; syncLayers?: boolean; discardLayerBlobs?: boolean } = {},
  ): Promise<ImageStore> {
    const store = new ImageStore(root, log, options.syncLayers ?? true, options.discardLayerBlobs ?? false);
    await mkdir(store.imagesDir, { recursive: true, mode: 0o700 });
    store.watchIndex();
    await store.blobs.init();
    await store.layers.init();
    await store.artifacts.init();
    await store.reconcile(options.sweepOrphans ?? true);
    return store;
  }

  // ---- BlobSink ----

  async hasBlob(digest: Digest): Promise<boolean> {
    const has = await this.blobs.has(digest);
    if (has) this.touch(digest);
    return has;
  }

  async putBlob(
    digest: Digest,
    expectedSize: number | undefined,
    body: Readable,
    signal?: AbortSignal,
  ): Promise<void> {
    this.touch(digest);
    if (await this.blobs.has(digest)) {
      body.destroy();
      return;
    }
    await this.blobs.put(digest, expectedSize, body, signal);
  }

  readBlob(digest: Digest): Promise<Uint8Array> {
    return this.blobs.read(digest);
  }

  /**
   * True when a pull need not fetch the layer's blob: it is stored, or (its
   * blob being discarded once unpacked) the layer is.
   */
  async hasLayerSource(
    layer: Omit<LayerRecord, 'chainId'>,
    parentChainId: Digest | undefined,
  ): Promise<boolean> {
    if (await this.hasBlob(layer.blobDigest)) return true;
    if (!this.discardLayerBlobs) return false;
    const chainId = chainIdOf(parentChainId, layer.diffId);
    if (!(await this.layers.has(chainId))) return false;
    this.touch(chainId);
    return true;
  }

  async unpackLayer(layer: Omit<LayerRecord, 'chainId'>, parentChainId: Digest | undefined): Promise<string> {
    const chainId = chainIdOf(parentChainId, layer.diffId);
    this.touch(layer.blobDigest);
    this.touch(chainId);
    const fromBlob = () => ({ file: this.blobs.path(layer.blobDigest) });
    // Unpacked or being unpacked: its blob is not needed (and may have been discarded).
    if (this.layers.busy(chainId) || (await this.layers.has(chainId))) {
      return this.layers.unpack(layer, chainId, fromBlob);
    }
    if (!(await this.blobs.has(layer.blobDigest))) {
      throw new NotFoundError(
        `layer blob ${layer.blobDigest} is not in the image store; it must be stored first`,
      );
    }
    return this.layers.unpack(layer, chainId, fromBlob);
  }

  /**
   * Stores a layer blob from `body` and unpacks the layer from the same
   * bytes as they arrive (unless it is unpacked already). Both are verified
   * while they stream; the blob is stored first, then the layer appears.
   */
  async pullLayer(
    layer: Omit<LayerRecord, 'chainId'>,
    parentChainId: Digest | undefined,
    size: number,
    body: Readable | DirectSource,
    options: Pick<UnpackOptions, 'signal' | 'onBytes' | 'onWritten'> = {},
  ): Promise<void> {
    const digest = layer.blobDigest;
    const chainId = chainIdOf(parentChainId, layer.diffId);
    this.touch(digest);
    this.touch(chainId);
    if (await this.blobs.has(digest)) {
      body.destroy();
      return;
    }
    if (this.discardLayerBlobs) {
      try {
        // Verified as it streams, unpacked, not kept.
        await this.layers.unpack(layer, chainId, () => body, {
          ...options,
          blob: { spec: { digest, size }, commit: () => Promise.resolve() },
        });
      } finally {
        body.destroy();
      }
      return;
    }
    const temp = this.blobs.tempPath(digest);
    try {
      await this.layers.unpack(layer, chainId, () => body, {
        ...options,
        blob: { spec: { temp, digest, size }, commit: () => this.blobs.commitTemp(temp, digest) },
      });
    } catch (err) {
      // The worker has stopped writing by now (or died): whatever it left goes.
      await rm(temp, { force: true });
      throw err;
    } finally {
      // Unread when something failed before the worker took it: close the connection.
      body.destroy();
    }
  }

  async commitImage(commit: ImageCommit): Promise<ImageRecord> {
    const config = await this.readConfig(commit.configDigest);
    const diffIds = config.rootfs?.diff_ids ?? [];
    if (diffIds.length !== commit.layers.length) {
      throw new InvalidArgumentError(
        `image ${commit.configDigest}: the config lists ${diffIds.length} layers, the manifest ${commit.layers.length}`,
      );
    }
    const layers: LayerRecord[] = [];
    for (const [i, layer] of commit.layers.entries()) {
      if (layer.diffId !== diffIds[i]) {
        throw new InvalidArgumentError(
          `image ${commit.configDigest}: layer ${i} has diff ID ${layer.diffId}, the config says ${diffIds[i]}`,
        );
      }
      const chainId = chainIdOf(layers.at(-1)?.chainId, layer.diffId);
      layers.push({ ...layer, chainId });
    }
    await this.blobs.putBytes(commit.manifestDigest, commit.manifest);
    this.touch(commit.manifestDigest);
    this.touch(commit.configDigest);
    // Unpack what is missing (an import stores blobs only; a pull has done it).
    for (const [i, layer] of layers.entries()) {
      await this.unpackLayer(layer, layers[i - 1]?.chainId);
    }
    const configSize = await this.blobs.size(commit.configDigest);
    const record = await this.update(async (images) => {
      // Re-check under the lock: a concurrent removal may have collected them.
      const needed = [commit.configDigest, commit.manifestDigest];
      if (!this.discardLayerBlobs) needed.push(...layers.map((l) => l.blobDigest));
      for (const d of needed) {
        if (!(await this.blobs.has(d))) {
          throw new UnavailableError(
            `image ${commit.configDigest}: blob ${d} was removed meanwhile; pull again`,
          );
        }
      }
      for (const l of layers) {
        if (!(await this.layers.has(l.chainId))) {
          throw new UnavailableError(
            `image ${commit.configDigest}: layer ${l.chainId} was removed meanwhile; pull again`,
          );
        }
      }
      const existing = images.get(commit.configDigest);
      const repoDigest = commit.repository ? `${commit.repository}@${commit.manifestDigest}` : undefined;
      claimTag(images, commit.configDigest, commit.tag);
      const stored: StoredImage = existing ?? {
        id: commit.configDigest,
        repoTags: [],
        repoDigests: [],
        manifestDigest: commit.manifestDigest,
        manifestMediaType: commit.manifestMediaType,
        size: configSize + layers.reduce((sum, l) => sum + l.size, 0),
        layers,
        createdAtNs: (BigInt(Date.now()) * 1_000_000n).toString(),
      };
      if (commit.tag && !stored.repoTags.includes(commit.tag)) stored.repoTags.push(commit.tag);
      if (repoDigest && !stored.repoDigests.includes(repoDigest)) stored.repoDigests.push(repoDigest);
      images.set(stored.id, stored);
      return stored;
    });
    for (const d of [
      commit.configDigest,
      commit.manifestDigest,
      ...layers.flatMap((l) => [l.blobDigest, l.chainId]),
    ]) {
      this.touched.delete(d);
    }
    this.log.info({ image: record.id, tags: record.repoTags }, 'image committed');
    return { ...record, config };
  }

  /**
   * Records a complete OCI artifact (every blob stored by the caller): its
   * named files become a directory tree first, then the index names it.
   */
  async commitArtifact(commit: ArtifactCommit): Promise<ImageRecord> {
    const id = commit.manifestDigest;
    const { artifact } = commit;
    await this.blobs.putBytes(id, commit.manifest);
    this.touch(id);
    if (commit.index) {
      await this.blobs.putBytes(commit.index.digest, commit.index.bytes);
      this.touch(commit.index.digest);
    }
    await this.artifacts.materialize(id, artifact.files);
    // As for an image: config and layers (files), not the manifest.
    const configSize = await this.blobs.size(artifact.configDigest);
    const record = await this.update(async (images) => {
      const stored: StoredImage = images.get(id) ?? {
        id,
        repoTags: [],
        repoDigests: [],
        manifestDigest: id,
        manifestMediaType: commit.manifestMediaType,
        size: configSize + artifact.files.reduce((sum, f) => sum + f.size, 0),
        layers: [],
        createdAtNs: (BigInt(Date.now()) * 1_000_000n).toString(),
        artifact,
      };
      // Re-check under the lock: a concurrent removal may have collected them.
      for (const d of blobsOf(stored)) {
        if (!(await this.blobs.has(d))) {
          throw new UnavailableError(`artifact ${id}: blob ${d} was removed meanwhile; pull again`);
        }
      }
      if (!(await this.artifacts.has(id))) {
        throw new UnavailableError(`artifact ${id}: its files were removed meanwhile; pull again`);
      }
      claimTag(images, id, commit.tag);
      if (commit.tag && !stored.repoTags.includes(commit.tag)) stored.repoTags.push(commit.tag);
      // The index it came from names it too (kubelet pulls and looks up repo@index).
      for (const digest of commit.repository ? [id, commit.index?.digest] : []) {
        const name = digest && `${commit.repository}@${digest}`;
        if (name && !stored.repoDigests.includes(name)) stored.repoDigests.push(name);
      }
      images.set(id, stored);
      return stored;
    });
    for (const d of [...blobsOf(record), ...(commit.index ? [commit.index.digest] : [])])
      this.touched.delete(d);
    this.log.info(
      { image: id, tags: record.repoTags, artifactType: artifact.artifactType },
      'artifact committed',
    );
    return { ...record, config: ARTIFACT_CONFIG };
  }

  // ---- queries ----

  /** Every complete image, re-reading the index if another process changed it. */
  async list(): Promise<ImageRecord[]> {
    await this.refresh();
    return [...this.records.values()];
  }

  async get(id: Digest): Promise<ImageRecord | undefined> {
    await this.refresh();
    return this.records.get(id);
  }

  /** The overlay lower directories of an image, lowest first. */
  layerDirs(record: ImageRecord): string[] {
    return record.layers.map((l) => this.layers.diffDir(l.chainId));
  }

  /** The directory of an artifact's named files. */
  artifactFilesDir(record: ImageRecord): string {
    return this.artifacts.filesDir(record.id);
  }

  // ---- mutations ----

  /**
   * When layer blobs are discarded: removes the stored blobs among `digests`
   * that are images' layer blobs with every such layer unpacked, unless an
   * image needs one as a config, manifest or artifact file, or a pull or
   * import of this process still relies on it. An import calls this once it
   * has committed all its images (one of them may need a blob another's
   * layers no longer do: the same bytes on another parent); a pull keeps
   * none to begin with.
   */
  async releaseLayerBlobs(digests: Iterable<Digest>): Promise<void> {
    if (!this.discardLayerBlobs) return;
    let discarded = 0;
    await this.lock.with(async () => {
      const images = await this.readIndex();
      const required = new Set(images.flatMap(requiredBlobsOf));
      const chainsOf = new Map<Digest, Digest[]>();
      for (const image of images) {
        for (const l of image.layers)
          chainsOf.set(l.blobDigest, [...(chainsOf.get(l.blobDigest) ?? []), l.chainId]);
      }
      for (const d of new Set(digests)) {
        const chains = chainsOf.get(d);
        if (!chains || required.has(d) || this.isTouched(d)) continue;
        let unpacked = true;
        for (const c of chains) if (!(await this.layers.has(c))) unpacked = false;
        if (!unpacked || !(await this.blobs.has(d))) continue;
        await this.blobs.remove(d);
        discarded++;
      }
    });
    if (discarded > 0) this.log.debug({ discarded }, 'discarded the blobs of unpacked layers');
  }

  /** Removes tags and repo digests from an image, keeping the image. */
  async untag(id: Digest, names: readonly string[]): Promise<void> {
    await this.update(async (images) => {
      const image = images.get(id);
      if (!image) return;
      image.repoTags = image.repoTags.filter((t) => !names.includes(t));
      image.repoDigests = image.repoDigests.filter((t) => !names.includes(t));
    });
  }

  /**
   * Deletes an image and the blobs and layers no other image uses (nor an
   * uncommitted pull of this process). Idempotent.
   */
  async deleteImage(id: Digest): Promise<boolean> {
    const doomedLayers: Digest[] = [];
    const removed = await this.update(async (images) => {
      const image = images.get(id);
      if (!image) return false;
      images.delete(id);
      const keepBlobs = new Set<string>();
      const keepLayers = new Set<string>();
      for (const other of images.values()) {
        for (const b of blobsOf(other)) keepBlobs.add(b);
        for (const l of other.layers) keepLayers.add(l.chainId);
      }
      // The artifact's tree first: its files are links to the blobs below.
      if (image.artifact) await this.artifacts.remove(image.id);
      for (const b of blobsOf(image)) if (!keepBlobs.has(b) && !this.isTouched(b)) await this.blobs.remove(b);
      for (const l of image.layers) {
        if (!keepLayers.has(l.chainId) && !this.isTouched(l.chainId)) doomedLayers.push(l.chainId);
      }
      return true;
    });
    // Layer trees can be large; they are removed after the index no longer names them.
    for (const chainId of doomedLayers) await this.layers.remove(chainId);
    if (removed) this.log.info({ image: id, layersRemoved: doomedLayers.length }, 'image removed');
    return removed;
  }

  // ---- internals ----

  private touch(key: string): void {
    this.touched.set(key, Date.now());
  }

  private isTouched(key: string): boolean {
    const at = this.touched.get(key);
    if (at === undefined) return false;
    if (Date.now() - at > TOUCH_TTL_MS) {
      this.touched.delete(key);
      return false;
    }
    return true;
  }

  private async readConfig(digest: Digest): Promise<ImageConfigFile> {
    digestHex(digest);
    const data = await this.blobs.read(digest);
    let config: ImageConfigFile;
    try {
      config = JSON.parse(data.toString('utf8')) as ImageConfigFile;
    } catch (err) {
      throw new InvalidArgumentError(`image config ${digest} is not valid JSON: ${errorMessage(err)}`);
    }
    if (typeof config !== 'object' || config === null || !Array.isArray(config.rootfs?.diff_ids)) {
      throw new InvalidArgumentError(`image config ${digest} has no rootfs.diff_ids`);
    }
    return config;
  }

  private async indexStamp(): Promise<string> {
    try {
      // Nanosecond times: a freed inode number can be reused by the next write.
      const info = await stat(this.indexPath, { bigint: true });
      return `${info.ino}:${info.mtimeNs}:${info.ctimeNs}:${info.size}`;
    } catch (err) {
      if (errnoCode(err) === 'ENOENT') return 'none';
      throw err;
    }
  }

  private async readIndex(): Promise<StoredImage[]> {
    try {
      const parsed = JSON.parse(await readFile(this.indexPath, 'utf8')) as IndexFile;
      if (parsed.version !== 1 || !Array.isArray(parsed.images)) {
        throw new Error(`unknown index format (version ${String(parsed.version)})`);
      }
      return parsed.images;
    } catch (err) {
      if (errnoCode(err) === 'ENOENT') return [];
      throw new Error(`image index ${this.indexPath} is unreadable: ${errorMessage(err)}`, { cause: err });
    }
  }

  private watchIndex(): void {
    const fallBack = (err: unknown) => {
      this.log.warn(
        { dir: this.imagesDir, err: errorMessage(err) },
        'cannot watch the image index; checking it on every query',
      );
      this.indexWatcher?.close();
      this.indexWatcher = undefined;
      this.indexMaybeChanged = true;
    };
    try {
      // Not persistent: the watch alone keeps no process (an import CLI) running.
      this.indexWatcher = watch(this.imagesDir, { persistent: false }, (_event, name) => {
        if (name === null || name === INDEX_FILE) this.indexMaybeChanged = true;
      });
      this.indexWatcher.on('error', fallBack);
    } catch (err) {
      fallBack(err);
    }
  }

  /** Reloads the in-memory view when the index file changed (`force`: check even if no change was seen). */
  private refresh(force = false): Promise<void> {
    // No change seen: the view is current once a reload in flight (if any) is done.
    if (this.indexWatcher && !this.indexMaybeChanged && !force) return this.reloading ?? Promise.resolve();
    // Cleared before looking: a change from now on sets it again.
    this.indexMaybeChanged = false;
    // One reload at a time, in order: an older one finishing last would leave an older view.
    const reload = (this.reloading ?? Promise.resolve())
      .catch(() => undefined)
      .then(() => this.reload())
      .finally(() => {
        if (this.reloading === reload) this.reloading = undefined;
      });
    this.reloading = reload;
    return reload;
  }

  private async reload(): Promise<void> {
    try {
      const stamp = await this.indexStamp();
      if (stamp === this.stamp) return;
      const stored = await this.readIndex();
      const next = new Map<Digest, ImageRecord>();
      for (const s of stored) {
        const known = this.records.get(s.id);
        try {
          const config = s.artifact ? ARTIFACT_CONFIG : (known?.config ?? (await this.readConfig(s.id)));
          next.set(s.id, { ...s, config });
        } catch (err) {
          this.log.warn({ image: s.id, err: errorMessage(err) }, 'image config unreadable; image hidden');
        }
      }
      this.records = next;
      this.stamp = stamp;
    } catch (err) {
      this.indexMaybeChanged = true;
      throw err;
    }
  }

  /** Read-modify-write of the index under the lock; the result is visible at once. */
  private async update<T>(fn: (images: Map<Digest, StoredImage>) => Promise<T>): Promise<T> {
    return this.lock.with(async () => {
      const images = new Map((await this.readIndex()).map((s) => [s.id, structuredClone(s)]));
      const result = await fn(images);
      await writeJsonAtomic(this.indexPath, { version: 1, images: [...images.values()] } satisfies IndexFile);
      this.stamp = '';
      await this.refresh(true);
      return result;
    });
  }

  /**
   * Start-up: drop the index writer's stale temp files, and make every image
   * whole or drop it: a missing layer directory is unpacked again from its
   * blob; an image whose blobs are gone is removed from the index.
   */
  private async reconcile(sweepOrphans: boolean): Promise<void> {
    await this.lock.with(async () => {
      for (const name of await readdir(this.imagesDir)) {
        if (name.startsWith('.index.json.') && name.endsWith('.tmp')) {
          await rm(join(this.imagesDir, name), { force: true });
        }
      }
    });
    const dropped: string[] = [];
    for (const image of await this.readIndex()) {
      const missing: string[] = [];
      // Not its layers' blobs: an unpacked layer needs none (they may have been
      // discarded before the option was turned off; a pull fetches them again).
      for (const d of requiredBlobsOf(image)) {
        if (!(await this.blobs.has(d))) missing.push(d);
      }
      if (missing.length > 0) {
        this.log.warn(
          { image: image.id, missing },
          'image blobs missing; dropping the image so a pull restores it',
        );
        dropped.push(image.id);
        continue;
      }
      try {
        if (image.artifact && !(await this.artifacts.has(image.id))) {
          this.log.warn({ image: image.id }, 'artifact directory missing; making it again');
          await this.artifacts.materialize(image.id, image.artifact.files);
        }
        for (const [i, layer] of image.layers.entries()) {
          if (await this.layers.has(layer.chainId)) continue;
          if (!(await this.blobs.has(layer.blobDigest))) {
            throw new NotFoundError(
              `layer directory ${layer.chainId} is missing and its blob ${layer.blobDigest} is not kept`,
            );
          }
          this.log.warn(
            { image: image.id, layer: layer.chainId },
            'layer directory missing; unpacking it again',
          );
          await this.unpackLayer(layer, image.layers[i - 1]?.chainId);
        }
      } catch (err) {
        this.log.warn(
          { image: image.id, err: errorMessage(err) },
          'cannot restore a layer; dropping the image',
        );
        dropped.push(image.id);
      }
    }
    if (dropped.length > 0) {
      await this.update(async (images) => {
        for (const id of dropped) images.delete(id);
      });
    }
    // Kept before the option was set, or left by an import that stopped half-way.
    if (this.discardLayerBlobs) await this.releaseLayerBlobs(await this.blobs.list());
    if (sweepOrphans) await this.sweepOrphans();
    await this.refresh();
  }

  /**
   * Removes blobs and layers no image names that have sat untouched for
   * ORPHAN_GRACE_MS: leftovers of pulls that failed or were abandoned. Younger
   * ones stay so an interrupted pull, retried, reuses what it fetched. A tree
   * something still has mounted stays too: a container's overlay can outlive
   * its image's record (an image dropped at start-up because its config blob
   * was lost), and removing a lower directory under it would empty its files.
   */
  private async sweepOrphans(): Promise<void> {
    const cutoff = Date.now() - ORPHAN_GRACE_MS;
    // Layer and artifact trees are named by a digest's hex: a mount of one shows it as `/<hex>/`.
    const mountinfo = await readFile('/proc/self/mountinfo', 'utf8').catch(() => '');
    const unmounted = (digests: Digest[]) => digests.filter((d) => !mountinfo.includes(`/${digestHex(d)}/`));
    let doomedLayers: Digest[] = [];
    let doomedArtifacts: Digest[] = [];
    let blobsRemoved = 0;
    await this.lock.with(async () => {
      const images = await this.readIndex();
      const blobs = new Set<string>();
      const layers = new Set<string>();
      const artifacts = new Set<string>();
      for (const image of images) {
        for (const b of blobsOf(image)) blobs.add(b);
        for (const l of image.layers) layers.add(l.chainId);
        if (image.artifact) artifacts.add(image.id);
      }
      for (const d of await this.blobs.list()) {
        const changed = (await stat(this.blobs.path(d)).catch(() => undefined))?.mtimeMs ?? Infinity;
        if (!blobs.has(d) && changed < cutoff) {
          await this.blobs.remove(d);
          blobsRemoved++;
        }
      }
      doomedLayers = unmounted(await this.layers.staleTrees(layers, cutoff));
      // An artifact's tree is only links: removed under the lock, as its blobs are.
      doomedArtifacts = unmounted(await this.artifacts.staleTrees(artifacts, cutoff));
      for (const a of doomedArtifacts) await this.artifacts.remove(a);
    });
    // Layer trees can be large: removed once the lock is given back.
    for (const c of doomedLayers) await this.layers.remove(c);
    if (blobsRemoved + doomedLayers.length + doomedArtifacts.length > 0) {
      this.log.info(
        { blobsRemoved, layersRemoved: doomedLayers.length, artifactsRemoved: doomedArtifacts.length },
        'removed unreferenced old blobs, layers and artifact trees',
      );
    }
  }
}
