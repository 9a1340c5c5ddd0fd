/**
 * PullImage: resolves a reference (short names through the search
 * registries), fetches the manifest from the registry's mirrors in order and
 * then the registry, picks this node's platform from an index, streams the
 * config and layers into the store (in parallel, verified while they flow,
 * skipping what is present), unpacks each layer as soon as its blob is in,
 * and commits the image. Nothing is visible before the commit, so a failed or
 * killed pull leaves no image that looks complete; the next pull reuses the
 * blobs and layers that were finished.
 *
 * Two pulls of the same reference with the same credentials share one run;
 * two pulls needing the same blob share its download.
 */
import { Readable } from 'node:stream';
import { status as GrpcStatus } from '@grpc/grpc-js';
import type { BerthConfig } from '../../config/schema.js';
import {
  BerthError,
  FailedPreconditionError,
  InternalError,
  InvalidArgumentError,
  UnavailableError,
  errorMessage,
} from '../../errors.js';
import type { Logger } from '../../log.js';
import { ContentMismatchError, LayerRejectedError } from '../layer/errors.js';
import { prepareLayerWorker } from '../layer/ingest.js';
import {
  formatReference,
  parseReference,
  pullCandidates,
  repositoryName,
  taggedName,
  type ImageReference,
} from '../reference.js';
import {
  credentialsFrom,
  credentialsKey,
  TokenCache,
  type AuthConfigLike,
  type Credentials,
} from '../registry/auth.js';
import { RepositoryClient, type FetchedManifest } from '../registry/client.js';
import { Endpoints } from '../registry/hosts.js';
import { artifactNamesProblem } from '../store/artifacts.js';
import { chainIdOf } from '../store/layers.js';
import { sha256Of } from '../store/blobs.js';
import type { ImageStore } from '../store/store.js';
import type { Digest, ImageConfigFile, ImageRecord, LayerRecord } from '../types.js';
import {
  MANIFEST_ACCEPT,
  artifactInfoOf,
  nodePlatform,
  parseManifest,
  selectPlatform,
  type Descriptor,
  type ImageManifest,
  type Platform,
} from './manifest.js';
import { Watchdog, type Transfer } from './progress.js';
import { NO_COUNTERS, type RuntimeCounters } from '../../util/runtime-counters.js';

const MAX_CONFIG_BYTES = 16 * 1024 * 1024;

/** A layer whose blob, when downloaded, is unpacked from the same bytes. */
interface LayerToUnpack {
  layer: Omit<LayerRecord, 'chainId'>;
  parent: Digest | undefined;
  /** The blob is received, verified and written; its flush to disk and commit may still run. */
  onWritten?: () => void;
}

export interface PullOptions {
  auth?: AuthConfigLike;
  /** The caller's cancellation (client gone, deadline). */
  signal?: AbortSignal;
}

/** A pull in progress that several callers wait for. */
interface SharedPull {
  promise: Promise<ImageRecord>;
  controller: AbortController;
  waiters: number;
}

/** A blob download in progress that several pulls may wait for. */
interface SharedBlob {
  promise: Promise<void>;
  transfer: Transfer;
}

/** Runs `fn` for each item with at most `limit` running at once; the first failure aborts the rest. */
async function eachLimited<T>(
  items: readonly T[],
  limit: number,
  controller: AbortController,
  fn: (item: T, index: number) => Promise<void>,
): Promise<void> {
  let next = 0;
  let firstError: unknown;
  const worker = async () => {
    while (next < items.length && firstError === undefined) {
      const i = next++;
      try {
        await fn(items[i], i);
      } catch (err) {
        if (firstError === undefined) {
          firstError = err;
          if (!controller.signal.aborted) controller.abort(err);
        }
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  if (firstError !== undefined) throw firstError;
}

/** One Puller per store, so every caller in the daemon shares pulls and downloads. */
const perStore = new WeakMap<ImageStore, Puller>();

export class Puller {
  /**
   * The daemon-wide Puller of a store (created on first use). Callers that
   * pull (PullImage, the pause image) should use this rather than `new`, so
   * that concurrent pulls of one image share a download.
   */
  static for(
    images: { store: ImageStore; counters: RuntimeCounters },
    config: () => BerthConfig,
    log: Logger,
  ): Puller {
    let puller = perStore.get(images.store);
    if (!puller) {
      puller = new Puller(images.store, config, log, { counters: images.counters });
      perStore.set(images.store, puller);
    }
    return puller;
  }

  private readonly endpoints: Endpoints;
  private readonly tokens = new TokenCache();
  private readonly pulls = new Map<string, SharedPull>();
  private readonly blobs = new Map<Digest, SharedBlob>();
  private readonly platform: Platform;
  private readonly counters: RuntimeCounters;

  constructor(
    private readonly store: ImageStore,
    private readonly config: () => BerthConfig,
    private readonly log: Logger,
    options: { platform?: Platform; counters?: RuntimeCounters } = {},
  ) {
    this.endpoints = new Endpoints(() => this.config().image.registries);
    this.platform = options.platform ?? nodePlatform();
    this.counters = options.counters ?? NO_COUNTERS;
  }

  /** Pulls `input` (a reference as kubelet sends it) and returns the committed image. */
  async pull(input: string, options: PullOptions = {}): Promise<ImageRecord> {
    if (input === '') throw new InvalidArgumentError('PullImage: image reference is empty');
    const parsed = parseReference(input);
    const candidates =
      parsed.domain !== undefined
        ? pullCandidates(input, [])
        : pullCandidates(input, this.config().image.unqualified_search_registries);
    const creds = credentialsFrom(options.auth);
    const errors: { ref: ImageReference; err: unknown }[] = [];
    for (const ref of candidates) {
      try {
        return await this.shared(ref, creds, options.signal);
      } catch (err) {
        if (options.signal?.aborted) throw err;
        errors.push({ ref, err });
        this.log.debug({ image: formatReference(ref), err: errorMessage(err) }, 'pull candidate failed');
      }
    }
    if (errors.length === 1) throw errors[0].err;
    // The most telling failure decides the code: anything but "not found" first.
    const decisive =
      errors.find((e) => e.err instanceof BerthError && e.err.code !== GrpcStatus.NOT_FOUND)?.err ??
      errors[0].err;
    const summary = errors.map((e) => `${formatReference(e.ref)}: ${errorMessage(e.err)}`).join('; ');
    const code = decisive instanceof BerthError ? decisive.code : GrpcStatus.UNAVAILABLE;
    throw new BerthError(code, `cannot pull ${input} from any search registry: ${summary}`);
  }

  /** Joins a running pull of the same reference and credentials, or starts one. */
  private shared(ref: ImageReference, creds: Credentials, signal?: AbortSignal): Promise<ImageRecord> {
    const key = `${formatReference(ref)}\0${credentialsKey(creds)}`;
    let entry = this.pulls.get(key);
    if (!entry) {
      const controller = new AbortController();
      const created: SharedPull = {
        controller,
        waiters: 0,
        promise: this.pullOne(ref, creds, controller).finally(() => {
          if (this.pulls.get(key) === created) this.pulls.delete(key);
        }),
      };
      entry = created;
      this.pulls.set(key, entry);
    } else {
      this.log.debug({ image: formatReference(ref) }, 'joining a pull already in progress');
    }
    const joined = entry;
    joined.waiters++;
    if (!signal) return joined.promise;
    return new Promise<ImageRecord>((resolve, reject) => {
      let done = false;
      const onAbort = () => {
        if (done) return;
        done = true;
        // The shared run stops only when nobody waits for it any more.
        if (--joined.waiters === 0) joined.controller.abort(signal.reason);
        reject(signal.reason instanceof Error ? signal.reason : new UnavailableError('pull cancelled'));
      };
      if (signal.aborted) return onAbort();
      signal.addEventListener('abort', onAbort, { once: true });
      joined.promise.then(
        (r) => {
          done = true;
          signal.removeEventListener('abort', onAbort);
          resolve(r);
        },
        (e: unknown) => {
          done = true;
          signal.removeEventListener('abort', onAbort);
          reject(e instanceof Error ? e : new Error(String(e)));
        },
      );
    });
  }

  private async pullOne(
    ref: ImageReference,
    creds: Credentials,
    controller: AbortController,
  ): Promise<ImageRecord> {
    const image = formatReference(ref);
    const started = Date.now();
    const cfg = this.config().image;
    const watchdog = new Watchdog(image, cfg.pull_progress_timeout_seconds * 1000, controller);
    const signal = controller.signal;
    // The first pull of a daemon: the layer worker boots during the manifest round trips.
    prepareLayerWorker();
    try {
      const { client, top, topDigest } = await this.resolveManifest(ref, creds, watchdog, signal);
      let manifestBytes = top.bytes;
      let manifestDigest = topDigest;
      let manifest = parseManifest(top.bytes, top.mediaType, `manifest ${image}`);
      let index: { digest: Digest; bytes: Buffer; mediaType: string } | undefined;
      if (manifest.kind === 'index') {
        index = { digest: topDigest, bytes: top.bytes, mediaType: manifest.mediaType };
        const chosen = selectPlatform(manifest, this.platform, `image ${image} (index ${topDigest})`);
        const child = await this.fetchManifest(client, chosen.digest, watchdog, signal);
        verifyManifest(child.bytes, chosen, `manifest ${chosen.digest} of ${image}`);
        manifestBytes = child.bytes;
        manifestDigest = chosen.digest;
        manifest = parseManifest(
          child.bytes,
          child.mediaType || chosen.mediaType,
          `manifest ${chosen.digest} of ${image}`,
        );
        if (manifest.kind === 'index') {
          throw new UnavailableError(
            `image ${image}: index ${topDigest} points to another index ${chosen.digest}`,
          );
        }
      }
      if (manifest.artifactType !== undefined) {
        const record = await this.pullArtifact(
          client,
          ref,
          manifest,
          manifest.artifactType,
          watchdog,
          controller,
          {
            bytes: manifestBytes,
            digest: manifestDigest,
            index,
          },
        );
        this.log.info(
          { image, id: record.id, endpoint: client.name, ms: Date.now() - started },
          'artifact pulled',
        );
        return record;
      }
      const config = await this.fetchConfig(client, manifest, image, watchdog, signal);
      const diffIds = config.rootfs.diff_ids;
      if (diffIds.length !== manifest.layers.length) {
        throw new ContentMismatchError(
          `image ${image}: manifest ${manifestDigest} has ${manifest.layers.length} layers, its config lists ${diffIds.length}`,
        );
      }
      const layers = manifest.layers.map((l, i) => ({
        blobDigest: l.digest,
        mediaType: l.mediaType || 'application/vnd.oci.image.layer.v1.tar+gzip',
        size: l.size,
        diffId: diffIds[i],
      }));
      // chainIDs of the parents: each layer's unpacked directory is named by its own.
      const parents: (Digest | undefined)[] = [];
      let chain: Digest | undefined;
      for (const l of layers) {
        parents.push(chain);
        chain = chainIdOf(chain, l.diffId);
      }
      // Downloads are limited; a layer downloaded now is unpacked from the
      // same bytes as they arrive (in a layer worker, see layer/ingest.ts).
      const unpacks: Promise<unknown>[] = [];
      await eachLimited(layers, cfg.max_concurrent_downloads, controller, async (layer, i) => {
        let written!: () => void;
        const allWritten = new Promise<void>((resolve) => (written = resolve));
        const stored = this.ensureBlob(client, manifest.layers[i], `pull of ${image}`, watchdog, signal, {
          layer,
          parent: parents[i],
          onWritten: () => written(),
        });
        const unpack = stored.then((source) => {
          this.counters.pulledLayer(source);
          // Present by now unless the blob was already stored or came from another pull's download.
          return this.store.unpackLayer(layer, parents[i]).catch((err: unknown) => {
            if (signal.aborted) throw err;
            if (err instanceof ContentMismatchError) {
              throw new ContentMismatchError(`pull of ${image}: ${err.message}`, { cause: err });
            }
            throw namedLayerError(err, `pull of ${image}`);
          });
        });
        unpack.catch((err: unknown) => {
          if (!signal.aborted) controller.abort(err);
        });
        unpacks.push(unpack);
        // The download slot is free once the layer is written: its flush to disk needs
        // neither the connection nor memory, and the next layer's bytes can flow meanwhile.
        await Promise.race([allWritten, stored]);
      }).catch(async (err: unknown) => {
        await Promise.allSettled(unpacks);
        throw err;
      });
      const results = await Promise.allSettled(unpacks);
      const failed = results.find((r) => r.status === 'rejected');
      if (failed) throw failed.reason;
      const tag = ref.digest ? undefined : taggedName(ref);
      const repository = repositoryName(ref);
      let record = await this.store.commitImage({
        configDigest: manifest.config.digest,
        manifestDigest,
        manifestMediaType: manifest.mediaType,
        manifest: manifestBytes,
        layers,
        tag,
        repository,
      });
      if (index) {
        // The index digest is a name of the image too (kubelet pulls and looks up repo@index).
        record = await this.store.commitImage({
          configDigest: manifest.config.digest,
          manifestDigest: index.digest,
          manifestMediaType: index.mediaType,
          manifest: index.bytes,
          layers,
          repository,
        });
      }
      this.log.info(
        { image, id: record.id, endpoint: client.name, ms: Date.now() - started },
        'image pulled',
      );
      return record;
    } catch (err) {
      const reason: unknown = signal.reason;
      if (signal.aborted && reason instanceof BerthError && !(err instanceof BerthError && err === reason)) {
        throw reason;
      }
      throw err;
    } finally {
      watchdog.stop();
    }
  }

  /**
   * An OCI artifact: its config and layers are stored as they are (verified
   * like any blob), nothing is unpacked; its named layers become the files
   * an image volume shows.
   */
  private async pullArtifact(
    client: RepositoryClient,
    ref: ImageReference,
    manifest: ImageManifest,
    artifactType: string,
    watchdog: Watchdog,
    controller: AbortController,
    found: { bytes: Buffer; digest: Digest; index?: { digest: Digest; bytes: Buffer } },
  ): Promise<ImageRecord> {
    const image = formatReference(ref);
    const artifact = artifactInfoOf(manifest, artifactType);
    const problem = artifactNamesProblem(artifact.files);
    if (problem) throw new FailedPreconditionError(`artifact ${image}: ${problem}`);
    const blobs = [manifest.config, ...manifest.layers];
    await eachLimited(blobs, this.config().image.max_concurrent_downloads, controller, async (d) => {
      await this.ensureBlob(client, d, `pull of ${image}`, watchdog, controller.signal);
    });
    return this.store.commitArtifact({
      manifestDigest: found.digest,
      manifestMediaType: manifest.mediaType,
      manifest: found.bytes,
      artifact,
      index: found.index,
      tag: ref.digest ? undefined : taggedName(ref),
      repository: repositoryName(ref),
    });
  }

  /** The top manifest from the first endpoint that has it (mirrors first). */
  private async resolveManifest(
    ref: ImageReference,
    creds: Credentials,
    watchdog: Watchdog,
    signal: AbortSignal,
  ): Promise<{ client: RepositoryClient; top: FetchedManifest; topDigest: Digest }> {
    const image = formatReference(ref);
    const reference = ref.digest ?? ref.tag ?? 'latest';
    const failures: { client: RepositoryClient; err: unknown }[] = [];
    for (const endpoint of await this.endpoints.forRegistry(ref.registry)) {
      const client = new RepositoryClient(endpoint, ref.repository, creds, this.tokens);
      try {
        const top = await this.fetchManifest(client, reference, watchdog, signal);
        const topDigest = sha256Of(top.bytes);
        if (ref.digest && topDigest !== ref.digest) {
          throw new ContentMismatchError(`${client.name}: manifest for ${image} has digest ${topDigest}`);
        }
        if (!ref.digest && top.headerDigest?.startsWith('sha256:') && top.headerDigest !== topDigest) {
          throw new ContentMismatchError(
            `${client.name}: manifest for ${image} has digest ${topDigest}, the registry says ${top.headerDigest}`,
          );
        }
        return { client, top, topDigest };
      } catch (err) {
        if (signal.aborted) throw err;
        failures.push({ client, err });
        this.log.debug({ image, endpoint: endpoint.host, err: errorMessage(err) }, 'manifest fetch failed');
      }
    }
    if (failures.length === 1) throw failures[0].err;
    // The registry itself (last) decides the code when it was tried; mirrors are a cache.
    const decisive = failures.at(-1)!.err;
    const code = decisive instanceof BerthError ? decisive.code : GrpcStatus.UNAVAILABLE;
    throw new BerthError(
      code,
      `cannot pull ${image}: ${failures.map((f) => errorMessage(f.err)).join('; ')}`,
    );
  }

  private async fetchManifest(
    client: RepositoryClient,
    reference: string,
    watchdog: Watchdog,
    signal: AbortSignal,
  ): Promise<FetchedManifest> {
    const transfer: Transfer = {
      name: `manifest ${client.repository}:${reference}`,
      bytes: 0,
      lastByteAt: Date.now(),
    };
    const done = watchdog.watch(transfer);
    try {
      return await client.manifest(reference, MANIFEST_ACCEPT, signal);
    } finally {
      done();
    }
  }

  private async fetchConfig(
    client: RepositoryClient,
    manifest: ImageManifest,
    image: string,
    watchdog: Watchdog,
    signal: AbortSignal,
  ): Promise<ImageConfigFile> {
    const d = manifest.config;
    if (d.size > MAX_CONFIG_BYTES) {
      throw new UnavailableError(
        `image ${image}: config ${d.digest} is larger than ${MAX_CONFIG_BYTES} bytes`,
      );
    }
    await this.ensureBlob(client, d, `pull of ${image}`, watchdog, signal);
    let config: ImageConfigFile;
    try {
      config = JSON.parse(
        Buffer.from(await this.store.readBlob(d.digest)).toString('utf8'),
      ) as ImageConfigFile;
    } catch (err) {
      throw new UnavailableError(`image ${image}: config ${d.digest} is not JSON: ${errorMessage(err)}`);
    }
    if (typeof config !== 'object' || config === null || !Array.isArray(config.rootfs?.diff_ids)) {
      throw new UnavailableError(`image ${image}: config ${d.digest} has no rootfs.diff_ids`);
    }
    return config;
  }

  /**
   * Stores a blob (or unpacks a layer) unless present; joins another pull's
   * download of it. Says where it came from.
   */
  private async ensureBlob(
    client: RepositoryClient,
    d: Descriptor,
    what: string,
    watchdog: Watchdog,
    signal: AbortSignal,
    layer?: LayerToUnpack,
  ): Promise<'local' | 'shared' | 'registry'> {
    let joined = false;
    for (let attempt = 0; ; attempt++) {
      const present = layer
        ? await this.store.hasLayerSource(layer.layer, layer.parent)
        : await this.store.hasBlob(d.digest);
      if (present) return joined ? 'shared' : 'local';
      const running = this.blobs.get(d.digest);
      // A download joined may leave nothing for this layer: its blob is not kept and
      // it unpacked the same bytes on another parent (another chain). Fetched again, then.
      if (!running || joined) break;
      const done = watchdog.watch(running.transfer);
      try {
        await abortable(running.promise, signal);
        joined = true;
      } catch (err) {
        // Their download failed (or they were cancelled): fetch it ourselves, once.
        if (signal.aborted || attempt > 0) throw err;
      } finally {
        done();
      }
    }
    const transfer: Transfer = { name: `blob ${d.digest}`, size: d.size, bytes: 0, lastByteAt: Date.now() };
    const promise = this.download(client, d, transfer, what, watchdog, signal, layer);
    const entry: SharedBlob = { promise, transfer };
    this.blobs.set(d.digest, entry);
    try {
      await promise;
      return 'registry';
    } finally {
      if (this.blobs.get(d.digest) === entry) this.blobs.delete(d.digest);
    }
  }

  private async download(
    client: RepositoryClient,
    d: Descriptor,
    transfer: Transfer,
    what: string,
    watchdog: Watchdog,
    signal: AbortSignal,
    layer?: LayerToUnpack,
  ): Promise<void> {
    const done = watchdog.watch(transfer);
    const started = Date.now();
    try {
      // A layer's bytes go straight from its socket into the layer worker's batches.
      const res = layer ? await client.directBlob(d.digest, signal) : await client.blob(d.digest, signal);
      if (res.length !== undefined && res.length !== d.size) {
        res.body.destroy();
        throw new ContentMismatchError(
          `${what}: ${client.name} announces ${res.length} bytes for blob ${d.digest}, the manifest ${d.size}`,
        );
      }
      if (!layer) {
        await this.store.putBlob(d.digest, d.size, counted(res.body as Readable, transfer), signal);
      } else {
        await this.store
          .pullLayer(layer.layer, layer.parent, d.size, res.body, {
            signal,
            onBytes: (n) => {
              transfer.bytes += n;
              transfer.lastByteAt = Date.now();
            },
            onWritten: layer.onWritten,
          })
          .catch((err: unknown) => {
            throw signal.aborted ? err : namedLayerError(err, what);
          });
      }
      this.counters.pulledBytes(transfer.bytes);
      this.log.debug({ blob: d.digest, bytes: transfer.bytes, ms: Date.now() - started }, 'blob stored');
    } catch (err) {
      if (err instanceof ContentMismatchError) {
        throw new ContentMismatchError(`${what}: ${client.name}: ${err.message}`, { cause: err });
      }
      throw err;
    } finally {
      done();
    }
  }

  /** New connections trust what the CA files and the system store hold now (SIGHUP). */
  renewConnections(): void {
    this.endpoints.renew();
  }

  async close(): Promise<void> {
    for (const p of this.pulls.values()) p.controller.abort(new UnavailableError('berth is shutting down'));
    await this.endpoints.close();
  }
}

function verifyManifest(bytes: Buffer, d: Descriptor, what: string): void {
  if (bytes.length !== d.size) {
    throw new ContentMismatchError(`${what}: ${bytes.length} bytes arrived, the index says ${d.size}`);
  }
  const actual = sha256Of(bytes);
  if (actual !== d.digest) throw new ContentMismatchError(`${what}: the content has digest ${actual}`);
}

/** Waits for `promise` unless `signal` aborts first. */
function abortable<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason as Error);
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason as Error);
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (e: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(e as Error);
      },
    );
  });
}

/**
 * A layer's failure with the pull named (the layer code names the blob):
 * what a worker thread reports is turned into the matching gRPC error.
 */
function namedLayerError(err: unknown, what: string): Error {
  if (err instanceof ContentMismatchError) return err; // the caller adds the endpoint
  if (err instanceof LayerRejectedError)
    return new LayerRejectedError(`${what}: ${err.message}`, { cause: err });
  if (err instanceof BerthError) return new BerthError(err.code, `${what}: ${err.message}`, { cause: err });
  return new InternalError(`${what}: ${errorMessage(err)}`, { cause: err });
}

/** The body, stamping the transfer with every chunk (for the stall watchdog). */
function counted(body: Readable, transfer: Transfer): Readable {
  return Readable.from(
    (async function* () {
      for await (const chunk of body as AsyncIterable<Buffer>) {
        transfer.bytes += chunk.length;
        transfer.lastByteAt = Date.now();
        yield chunk;
      }
    })(),
    { objectMode: false },
  );
}
