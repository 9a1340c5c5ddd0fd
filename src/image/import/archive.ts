/**
 * Air-gapped import: an OCI image-layout tarball (oci-layout, index.json,
 * blobs/sha256/*) or a `docker save` archive (manifest.json, repositories,
 * <id>.json configs, <dir>/layer.tar), read in one streaming pass into the
 * content-addressed store, then committed image by image.
 *
 * Blobs land in the store as they stream (verified where the archive names
 * their digest); an image becomes visible only at its commit, so a failed or
 * killed import leaves no image that looks complete.
 */
import { once } from 'node:events';
import { createReadStream } from 'node:fs';
import { PassThrough, type Readable } from 'node:stream';
import { InvalidArgumentError, errorMessage } from '../../errors.js';
import type { Logger } from '../../log.js';
import { decompressed } from '../layer/decompress.js';
import { TarReader, displayName, type TarBody, type TarEntryResult, type TarHeader } from '../layer/tar.js';
import { normalizeReference, parseReference, repositoryName, taggedName } from '../reference.js';
import { sha256Of } from '../store/blobs.js';
import type { ImageStore } from '../store/store.js';
import { artifactInfoOf, parseManifest, type ParsedManifest } from '../pull/manifest.js';
import { artifactNamesProblem } from '../store/artifacts.js';
import type { ArtifactInfo, Digest, ImageConfigFile, ImageRecord } from '../types.js';

const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
const DOCKER_LIST = 'application/vnd.docker.distribution.manifest.list.v2+json';
const OCI_LAYER_TAR = 'application/vnd.oci.image.layer.v1.tar';
const OCI_CONFIG = 'application/vnd.oci.image.config.v1+json';
const MAX_METADATA_BYTES = 16 * 1024 * 1024;

export interface ImportedImage {
  id: Digest;
  repoTags: string[];
  /** Why an image came in without a name, if it did. */
  warning?: string;
}

export interface ImportOptions {
  log: Logger;
  signal?: AbortSignal;
  /** Repository for OCI layouts whose ref.name annotations are bare tags ("1.36"). */
  repository?: string;
}

interface Descriptor {
  mediaType?: string;
  digest: string;
  size: number;
  platform?: { architecture?: string; os?: string; variant?: string };
  annotations?: Record<string, string>;
}

interface Manifest {
  mediaType?: string;
  config: Descriptor;
  layers: Descriptor[];
  manifests?: Descriptor[];
}

function bad(file: string, why: string): InvalidArgumentError {
  return new InvalidArgumentError(`cannot import ${file}: ${why}`);
}

function nodePlatform(): { os: string; architecture: string } {
  const arch: Record<string, string> = {
    x64: 'amd64',
    arm64: 'arm64',
    arm: 'arm',
    ia32: '386',
    s390x: 's390x',
  };
  return { os: 'linux', architecture: arch[process.arch] ?? process.arch };
}

/** What one pass over the archive collected. */
interface Collected {
  /** Small JSON files by archive path. */
  metadata: Map<string, Buffer>;
  /** Archive path → digest of the blob stored from it. */
  stored: Map<string, { digest: Digest; size: number }>;
}

/** The blob being stored from the archive entry being read. */
interface Storing {
  sink: PassThrough;
  done: Promise<unknown>;
}

async function collect(file: string, store: ImageStore, options: ImportOptions): Promise<Collected> {
  const metadata = new Map<string, Buffer>();
  const stored = new Map<string, { digest: Digest; size: number }>();
  const { signal } = options;
  let storing: Storing | undefined;

  /** The entry's bytes go through a stream to `consume` (a store method), which must finish before the next entry. */
  const storeFrom = (consume: (body: Readable) => Promise<unknown>): TarBody => {
    const sink = new PassThrough({ highWaterMark: 1024 * 1024 });
    // A store that failed destroyed the stream; its own promise carries the error.
    sink.on('error', () => undefined);
    const done = consume(sink);
    done.catch(() => undefined);
    storing = { sink, done };
    return { write: (data) => void sink.write(data), end: () => void sink.end() };
  };

  const begin = (header: TarHeader): TarEntryResult => {
    const name = displayName(header.name)
      .replace(/^(\.\/)+/, '')
      .replace(/\/+$/, '');
    if (header.type !== 'file' && header.type !== 'contiguous-file') return undefined;
    const blob = /^blobs\/sha256\/([a-f0-9]{64})$/.exec(name);
    if (blob) {
      const digest = `sha256:${blob[1]}`;
      stored.set(name, { digest, size: header.size });
      // Already stored (an earlier import or pull): the bytes are skipped.
      return store
        .hasBlob(digest)
        .then((has) =>
          has ? undefined : storeFrom((body) => store.putBlob(digest, header.size, body, signal)),
        );
    }
    if (name.endsWith('.json') || name === 'repositories' || name === 'oci-layout') {
      if (header.size > MAX_METADATA_BYTES) throw bad(file, `${name} is larger than 16 MiB`);
      const chunks: Buffer[] = [];
      return {
        write: (data) => chunks.push(Buffer.from(data)),
        end: () => metadata.set(name, Buffer.concat(chunks)),
      };
    }
    if (name.endsWith('.tar') || name.endsWith('/layer')) {
      // docker-save layers: named by path, digest unknown until hashed.
      return storeFrom(async (body) => stored.set(name, await store.blobs.ingest(body, signal)));
    }
    return undefined;
  };

  const reader = new TarReader((header) => {
    const previous = storing;
    storing = undefined;
    return previous ? previous.done.then(() => begin(header)) : begin(header);
  });
  const source = createReadStream(file);
  let stream: Readable = source;
  const stop = () => stream.destroy(new Error('the import was cancelled'));
  signal?.addEventListener('abort', stop, { once: true });
  try {
    stream = await decompressed(source);
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      signal?.throwIfAborted();
      const paused = reader.write(chunk);
      if (paused) await paused;
      const current = storing;
      // The store reads at its own pace: wait for it rather than buffer the archive.
      if (current?.sink.writableNeedDrain) await Promise.race([once(current.sink, 'drain'), current.done]);
    }
    reader.end();
    await storing?.done;
  } catch (err) {
    source.destroy();
    stream.destroy();
    storing?.sink.destroy();
    // The store removes its temp file before it settles.
    await storing?.done.catch(() => undefined);
    if (err instanceof InvalidArgumentError) throw err;
    throw bad(file, errorMessage(err));
  } finally {
    signal?.removeEventListener('abort', stop);
  }
  return { metadata, stored };
}

function parseJson<T>(file: string, name: string, data: Uint8Array | undefined): T {
  if (!data) throw bad(file, `${name} is missing`);
  try {
    return JSON.parse(Buffer.from(data).toString('utf8')) as T;
  } catch (err) {
    throw bad(file, `${name} is not valid JSON: ${errorMessage(err)}`);
  }
}

/** Loads every image of the archive into the store; returns what was imported. */
export async function importArchive(
  file: string,
  store: ImageStore,
  options: ImportOptions,
): Promise<ImportedImage[]> {
  const collected = await collect(file, store, options);
  let images: ImportedImage[];
  if (collected.metadata.has('manifest.json'))
    images = await importDockerSave(file, store, collected, options);
  else if (collected.metadata.has('index.json'))
    images = await importOciLayout(file, store, collected, options);
  else {
    throw bad(
      file,
      'it is neither an OCI image layout (no index.json) nor a docker save archive (no manifest.json)',
    );
  }
  // Only now: an image committed later may need a layer blob an earlier one has unpacked.
  await store.releaseLayerBlobs([...collected.stored.values()].map((b) => b.digest));
  return images;
}

async function importDockerSave(
  file: string,
  store: ImageStore,
  { metadata, stored }: Collected,
  options: ImportOptions,
): Promise<ImportedImage[]> {
  const entries = parseJson<{ Config: string; RepoTags?: string[] | null; Layers: string[] }[]>(
    file,
    'manifest.json',
    metadata.get('manifest.json'),
  );
  if (!Array.isArray(entries)) throw bad(file, 'manifest.json is not a list');
  const results: ImportedImage[] = [];
  for (const entry of entries) {
    let configDigest: Digest;
    let configBytes: Buffer;
    const configBlob = stored.get(entry.Config);
    if (configBlob) {
      configDigest = configBlob.digest;
      configBytes = Buffer.from(await store.readBlob(configDigest));
    } else {
      const data = metadata.get(entry.Config);
      if (!data) throw bad(file, `config ${entry.Config} named by manifest.json is not in the archive`);
      configBytes = data;
      configDigest = sha256Of(data);
      await store.blobs.putBytes(configDigest, data);
    }
    const config = parseJson<ImageConfigFile>(file, entry.Config, configBytes);
    const diffIds = config.rootfs?.diff_ids ?? [];
    if (!Array.isArray(entry.Layers) || diffIds.length !== entry.Layers.length) {
      throw bad(
        file,
        `image ${entry.Config}: ${entry.Layers?.length ?? 0} layers but the config lists ${diffIds.length}`,
      );
    }
    const layers = entry.Layers.map((path, i) => {
      const blob = stored.get(path);
      if (!blob) throw bad(file, `layer ${path} named by manifest.json is not in the archive`);
      return { blobDigest: blob.digest, mediaType: OCI_LAYER_TAR, size: blob.size, diffId: diffIds[i] };
    });
    // docker save keeps no registry manifest: describe the image with an OCI one.
    const manifest = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: OCI_MANIFEST,
        config: { mediaType: OCI_CONFIG, digest: configDigest, size: configBytes.length },
        layers: layers.map((l) => ({ mediaType: l.mediaType, digest: l.blobDigest, size: l.size })),
      }),
    );
    const base = {
      configDigest,
      manifestDigest: sha256Of(manifest),
      manifestMediaType: OCI_MANIFEST,
      manifest,
      layers,
    };
    const tags = (entry.RepoTags ?? []).map((t) => {
      try {
        return taggedName(normalizeReference(t))!;
      } catch (err) {
        throw bad(file, `repo tag ${JSON.stringify(t)}: ${errorMessage(err)}`);
      }
    });
    let record: ImageRecord | undefined;
    for (const tag of tags) record = await store.commitImage({ ...base, tag });
    record ??= await store.commitImage(base);
    options.log.info({ image: record.id, tags }, 'imported from a docker save archive');
    results.push({
      id: record.id,
      repoTags: tags,
      ...(tags.length === 0 ? { warning: 'the archive names no tag; use the image ID' } : {}),
    });
  }
  return results;
}

function platformOf(d: Descriptor): string {
  const p = d.platform ?? {};
  return [p.os ?? '?', p.architecture ?? '?', p.variant].filter(Boolean).join('/');
}

/** The manifest for this node from a manifest or an index (recursively). */
async function selectManifest(
  file: string,
  store: ImageStore,
  descriptor: Descriptor,
): Promise<{ descriptor: Descriptor; manifest: Manifest; bytes: Buffer }> {
  const bytes = Buffer.from(await store.readBlob(descriptor.digest));
  const manifest = parseJson<Manifest>(file, `blob ${descriptor.digest}`, bytes);
  const mediaType = manifest.mediaType ?? descriptor.mediaType;
  if (mediaType === OCI_INDEX || mediaType === DOCKER_LIST || Array.isArray(manifest.manifests)) {
    const want = nodePlatform();
    const match = (manifest.manifests ?? []).find(
      (m) => m.platform?.os === want.os && m.platform?.architecture === want.architecture,
    );
    if (!match) {
      const offered = (manifest.manifests ?? []).map(platformOf).join(', ') || 'none';
      throw bad(
        file,
        `index ${descriptor.digest} has no image for ${want.os}/${want.architecture} (offers ${offered})`,
      );
    }
    return selectManifest(file, store, match);
  }
  if (!manifest.config || !Array.isArray(manifest.layers)) {
    throw bad(file, `blob ${descriptor.digest} is not an image manifest`);
  }
  return { descriptor: { ...descriptor, mediaType: mediaType ?? OCI_MANIFEST }, manifest, bytes };
}

/** The reference a layout entry names: a full name, or a bare tag under options.repository. */
function layoutName(
  annotations: Record<string, string> | undefined,
  repository?: string,
): string | undefined {
  const full = annotations?.['io.containerd.image.name'];
  if (full) return full;
  const ref = annotations?.['org.opencontainers.image.ref.name'];
  if (!ref) return undefined;
  if (ref.includes('/') || ref.includes(':') || ref.includes('@')) return ref;
  return repository ? `${repository}:${ref}` : undefined;
}

async function importOciLayout(
  file: string,
  store: ImageStore,
  { metadata }: Collected,
  options: ImportOptions,
): Promise<ImportedImage[]> {
  const index = parseJson<{ manifests?: Descriptor[] }>(file, 'index.json', metadata.get('index.json'));
  if (!Array.isArray(index.manifests) || index.manifests.length === 0) {
    throw bad(file, 'index.json lists no manifests');
  }
  const results: ImportedImage[] = [];
  for (const top of index.manifests) {
    if (!(await store.blobs.has(top.digest)))
      throw bad(file, `blob ${top.digest} named by index.json is missing`);
    const { descriptor, manifest, bytes } = await selectManifest(file, store, top);
    const { tag, repository } = layoutReference(file, top, options);
    const artifact = await artifactIn(file, store, descriptor, bytes);
    if (artifact) {
      const record = await store.commitArtifact({
        manifestDigest: descriptor.digest,
        manifestMediaType: descriptor.mediaType ?? OCI_MANIFEST,
        manifest: bytes,
        artifact,
        tag,
        repository,
      });
      options.log.info({ image: record.id, tag }, 'imported an OCI artifact from an OCI image layout');
      results.push(imported(record.id, tag, top));
      continue;
    }
    const config = parseJson<ImageConfigFile>(
      file,
      `config ${manifest.config.digest}`,
      await store.readBlob(manifest.config.digest),
    );
    const diffIds = config.rootfs?.diff_ids ?? [];
    if (diffIds.length !== manifest.layers.length) {
      throw bad(
        file,
        `manifest ${descriptor.digest} has ${manifest.layers.length} layers, its config ${diffIds.length}`,
      );
    }
    const record = await store.commitImage({
      configDigest: manifest.config.digest,
      manifestDigest: descriptor.digest,
      manifestMediaType: descriptor.mediaType ?? OCI_MANIFEST,
      manifest: bytes,
      layers: manifest.layers.map((l, i) => ({
        blobDigest: l.digest,
        mediaType: l.mediaType ?? OCI_LAYER_TAR,
        size: l.size,
        diffId: diffIds[i],
      })),
      tag,
      repository,
    });
    options.log.info({ image: record.id, tag }, 'imported from an OCI image layout');
    results.push(imported(record.id, tag, top));
  }
  return results;
}

/** The tag and repository an index.json entry names, if any. */
function layoutReference(
  file: string,
  top: Descriptor,
  options: ImportOptions,
): { tag?: string; repository?: string } {
  const name = layoutName(top.annotations, options.repository);
  if (!name) return {};
  try {
    parseReference(name);
    const ref = normalizeReference(name);
    return { tag: taggedName(ref), repository: repositoryName(ref) };
  } catch (err) {
    throw bad(file, `reference ${JSON.stringify(name)} in index.json: ${errorMessage(err)}`);
  }
}

function imported(id: Digest, tag: string | undefined, top: Descriptor): ImportedImage {
  if (tag) return { id, repoTags: [tag] };
  const bareTag = top.annotations?.['org.opencontainers.image.ref.name'];
  return {
    id,
    repoTags: [],
    warning: bareTag
      ? `index.json names only the tag "${bareTag}"; pass --repository to name the image`
      : 'index.json names no reference; use the image ID',
  };
}

/**
 * The artifact a layout's manifest describes (by the pull's rules), with its
 * blobs checked present and whole; undefined for a container image.
 */
async function artifactIn(
  file: string,
  store: ImageStore,
  descriptor: Descriptor,
  bytes: Buffer,
): Promise<ArtifactInfo | undefined> {
  let parsed: ParsedManifest;
  try {
    parsed = parseManifest(bytes, descriptor.mediaType ?? OCI_MANIFEST, `manifest ${descriptor.digest}`);
  } catch (err) {
    throw bad(file, errorMessage(err));
  }
  if (parsed.kind !== 'manifest' || parsed.artifactType === undefined) return undefined;
  for (const d of [parsed.config, ...parsed.layers]) {
    const size = (await store.blobs.has(d.digest)) ? await store.blobs.size(d.digest) : undefined;
    if (size !== d.size) {
      throw bad(
        file,
        `blob ${d.digest} of artifact ${descriptor.digest} is ${size === undefined ? 'missing' : `${size} bytes, the manifest says ${d.size}`}`,
      );
    }
  }
  const artifact = artifactInfoOf(parsed, parsed.artifactType);
  const problem = artifactNamesProblem(artifact.files);
  if (problem) throw bad(file, `artifact ${descriptor.digest}: ${problem}`);
  return artifact;
}
