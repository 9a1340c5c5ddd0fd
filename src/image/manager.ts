/**
 * The ImageManager: what consumers (RPCs, containers, sandboxes) use to find
 * images, mount their layers and remove them with CRI semantics. Pulls and
 * imports write through `manager.store` (the BlobSink).
 */
import { join } from 'node:path';
import type { BerthConfig } from '../config/schema.js';
import { FailedPreconditionError, InvalidArgumentError, errorMessage } from '../errors.js';
import type { Logger } from '../log.js';
import {
  isImageId,
  normalizeReference,
  parseReference,
  pullCandidates,
  repositoryName,
  type ImageReference,
} from './reference.js';
import { ImageStore } from './store/store.js';
import { diskUsage, mountpointOf, type DiskUsage } from './store/usage.js';
import type { Digest, ImageRecord } from './types.js';
import { NO_COUNTERS, type RuntimeCounters } from '../util/runtime-counters.js';

/**
 * Answers whether a container uses an image: the holder's name or ID, or
 * undefined. The container subsystem registers one with `setInUseChecker`.
 */
export type InUseChecker = (imageId: Digest) => string | undefined | Promise<string | undefined>;

/** How a reference matched an image. */
export interface Resolved {
  record: ImageRecord;
  /** The normalised tag that matched, when the reference was a tag. */
  tag?: string;
}

export interface FsUsage extends DiskUsage {
  mountpoint: string;
}

const HEX_PREFIX = /^(?:sha256:)?([a-f0-9]{3,64})$/;
const FS_INFO_TTL_MS = 5_000;

export class ImageManager {
  /** In-use checks by the kind of object that holds images (container, pod sandbox). */
  private readonly inUse = new Map<string, InUseChecker>();
  private readonly pinnedByDaemon = new Set<string>();
  private fsCache?: { at: number; value: Promise<{ images: FsUsage; containers: FsUsage }> };

  private constructor(
    readonly store: ImageStore,
    private readonly config: () => BerthConfig,
    private readonly log: Logger,
    /** What pulls count (Prometheus). */
    readonly counters: RuntimeCounters,
  ) {}

  /** Opens the store under `config().root` and reconciles it (start-up). */
  static async open(
    config: () => BerthConfig,
    log: Logger,
    counters: RuntimeCounters = NO_COUNTERS,
  ): Promise<ImageManager> {
    const store = await ImageStore.open(config().root, log.child({ component: 'image-store' }), {
      syncLayers: config().image.sync_layers,
      discardLayerBlobs: config().image.discard_unpacked_layers,
    });
    return new ImageManager(store, config, log, counters);
  }

  /** Registers the in-use check of one kind of image holder (containers, pod sandboxes) for RemoveImage. */
  setInUseChecker(checker: InUseChecker, kind = 'container'): void {
    this.inUse.set(kind, checker);
  }

  /**
   * Marks an image reference or ID as pinned (the daemon does this for the
   * pause image it uses), in addition to image.pinned_images.
   */
  pin(refOrId: string): void {
    this.pinnedByDaemon.add(refOrId);
  }

  list(): Promise<ImageRecord[]> {
    return this.store.list();
  }

  /** The overlay lower directories of an image, lowest first (overlayfs wants them highest first). */
  layerDirs(record: ImageRecord): string[] {
    return this.store.layerDirs(record);
  }

  /** What an image volume of this image shows, lowest first: its layers, or an artifact's files. */
  volumeDirs(record: ImageRecord): string[] {
    return record.artifact ? [this.store.artifactFilesDir(record)] : this.store.layerDirs(record);
  }

  /** Refuses an OCI artifact where a container image is needed (`what` names the asker). */
  requireRunnable(record: ImageRecord, ref: string, what: string): void {
    if (!record.artifact) return;
    throw new FailedPreconditionError(
      `${what}: ${JSON.stringify(ref)} is an OCI artifact (${record.artifact.artifactType}), not a container image; it can only be mounted as an image volume`,
    );
  }

  /** Normalised names a reference can mean here: itself, or one per search registry for a short name. */
  private candidates(input: string): ImageReference[] {
    const parsed = parseReference(input);
    if (parsed.domain !== undefined) return [normalizeReference(input)];
    const out: ImageReference[] = [];
    try {
      out.push(...pullCandidates(input, this.config().image.unqualified_search_registries));
    } catch {
      // no search registries: docker.io below
    }
    out.push(normalizeReference(input));
    return out;
  }

  /**
   * Finds an image by ID, tag, short name, digest reference or unique ID
   * prefix. Undefined when there is none; INVALID_ARGUMENT for an empty or
   * malformed reference.
   */
  async resolve(input: string): Promise<Resolved | undefined> {
    if (input === '') throw new InvalidArgumentError('image reference is empty');
    const images = await this.store.list();
    if (isImageId(input)) {
      const id = input.startsWith('sha256:') ? input : `sha256:${input}`;
      const record = images.find((i) => i.id === id);
      return record && { record };
    }
    let candidates: ImageReference[] | undefined;
    let parseError: unknown;
    try {
      candidates = this.candidates(input);
    } catch (err) {
      parseError = err;
    }
    for (const ref of candidates ?? []) {
      const repo = repositoryName(ref);
      if (ref.digest) {
        const name = `${repo}@${ref.digest}`;
        const record = images.find(
          (i) =>
            i.repoDigests.includes(name) ||
            (i.manifestDigest === ref.digest &&
              [...i.repoTags, ...i.repoDigests].some(
                (n) => n.startsWith(`${repo}:`) || n.startsWith(`${repo}@`),
              )),
        );
        if (record) return { record };
      } else if (ref.tag) {
        const name = `${repo}:${ref.tag}`;
        const record = images.find((i) => i.repoTags.includes(name));
        if (record) return { record, tag: name };
      }
    }
    const prefix = HEX_PREFIX.exec(input);
    if (prefix) {
      const matches = images.filter((i) => i.id.slice('sha256:'.length).startsWith(prefix[1]));
      if (matches.length === 1) return { record: matches[0] };
      if (matches.length > 1) {
        throw new InvalidArgumentError(
          `image ID prefix ${input} is ambiguous: ${matches.length} images match`,
        );
      }
    }
    if (parseError) throw parseError;
    return undefined;
  }

  /** True when the image is in image.pinned_images, is the pause image, or the daemon pinned it. */
  async isPinned(record: ImageRecord): Promise<boolean> {
    const config = this.config();
    const refs = [...config.image.pinned_images, ...this.pinnedByDaemon];
    if (config.runtime.pause_image) refs.push(config.runtime.pause_image);
    for (const ref of refs) {
      if (ref === record.id || ref === record.id.slice(7)) return true;
      let candidates: ImageReference[];
      try {
        candidates = this.candidates(ref);
      } catch (err) {
        this.log.debug({ ref, err: errorMessage(err) }, 'ignoring an unparsable pinned image');
        continue;
      }
      for (const c of candidates) {
        const repo = repositoryName(c);
        if (
          c.digest &&
          (record.repoDigests.includes(`${repo}@${c.digest}`) || record.manifestDigest === c.digest)
        )
          return true;
        if (!c.digest && c.tag && record.repoTags.includes(`${repo}:${c.tag}`)) return true;
      }
    }
    return false;
  }

  /**
   * RemoveImage semantics: a tag removes that tag only while the image has
   * others; an ID, ID prefix, digest reference or last tag removes the image
   * with every tag. Absent images are fine (idempotent). An image a
   * container uses is refused, naming the container.
   */
  async remove(input: string): Promise<void> {
    const found = await this.resolve(input);
    if (!found) {
      this.log.debug({ image: input }, 'RemoveImage: no such image; nothing to do');
      return;
    }
    const { record, tag } = found;
    if (tag && record.repoTags.length > 1) {
      await this.store.untag(record.id, [tag]);
      return;
    }
    for (const [kind, check] of this.inUse) {
      const holder = await check(record.id);
      if (holder !== undefined) {
        throw new FailedPreconditionError(
          `image ${input} (${record.id}) is in use by ${kind} ${holder}; remove the ${kind} first`,
        );
      }
    }
    await this.store.deleteImage(record.id);
  }

  /** Bytes and inodes under the image store and the container storage dir (cached briefly). */
  fsUsage(): Promise<{ images: FsUsage; containers: FsUsage }> {
    const now = Date.now();
    if (this.fsCache && now - this.fsCache.at < FS_INFO_TTL_MS) return this.fsCache.value;
    const value = (async () => {
      const root = this.config().root;
      const imagesDir = this.store.imagesDir;
      const containersDir = join(root, 'containers');
      const [images, containers, imagesMount, containersMount] = await Promise.all([
        diskUsage(imagesDir),
        diskUsage(containersDir),
        mountpointOf(imagesDir),
        mountpointOf(containersDir),
      ]);
      return {
        images: { ...images, mountpoint: imagesMount },
        containers: { ...containers, mountpoint: containersMount },
      };
    })();
    this.fsCache = { at: now, value };
    value.catch(() => (this.fsCache = undefined));
    return value;
  }
}
