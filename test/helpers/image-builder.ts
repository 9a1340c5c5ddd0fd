/**
 * Builds OCI test images inside the tests, from a busybox rootfs taken from
 * the host (Debian's dynamic /usr/bin/busybox plus the shared libraries `ldd`
 * lists, applets as symlinks in /bin). Writes OCI image layouts (for
 * `skopeo copy oci:DIR:TAG docker://…` or `berth image import`), OCI layout
 * tarballs and `docker save` archives, or pushes exact bytes to a registry
 * (`pushToRegistry`, for Docker manifest lists, which skopeo would rewrite).
 *
 *   const img = await buildImage({ config: { cmd: ['sleep', '100'] } });
 *   await writeOciLayout(dir, [{ tag: 'v1', image: img }]);
 *   const multi = await buildIndex([img]);            // + fake arm64, arm/v7
 *   await writeDockerArchive(file, [{ image: img, repoTags: ['busybox:test'] }]);
 *
 * Everything is deterministic (fixed mtimes, stable JSON), so the same spec
 * gives the same digests in every run.
 */
import { createHash } from 'node:crypto';
import { mkdir, readFile, writeFile, readdir, stat } from 'node:fs/promises';
import { createWriteStream } from 'node:fs';
import { join, posix } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { promisify } from 'node:util';
import { gzip as gzipCb, zstdCompress as zstdCb } from 'node:zlib';
import tar from 'tar-stream';
import { runChecked } from '../../src/util/run.js';

const gzip = promisify(gzipCb);
const zstdCompress = promisify(zstdCb);

export const FIXED_MTIME = new Date('2024-01-01T00:00:00Z');

export const MEDIA = {
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  ociConfig: 'application/vnd.oci.image.config.v1+json',
  layerTar: 'application/vnd.oci.image.layer.v1.tar',
  layerGzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  layerZstd: 'application/vnd.oci.image.layer.v1.tar+zstd',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  dockerConfig: 'application/vnd.docker.container.image.v1+json',
  dockerLayerGzip: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
  dockerLayerTar: 'application/vnd.docker.image.rootfs.diff.tar',
} as const;

/** OCI media types (default), or Docker schema2 ones (no zstd there). */
export type MediaTypes = 'oci' | 'docker';

function dockerLayerType(mediaType: string): string {
  if (mediaType === MEDIA.layerGzip) return MEDIA.dockerLayerGzip;
  if (mediaType === MEDIA.layerTar) return MEDIA.dockerLayerTar;
  throw new Error(`image-builder: Docker schema2 has no media type for ${mediaType}`);
}

export type Compression = 'gzip' | 'zstd' | 'none';

export type EntryType =
  'file' | 'directory' | 'symlink' | 'link' | 'character-device' | 'block-device' | 'fifo';

/** One tar entry. `path` is written as given (tests use it for hostile names). */
export interface TarEntry {
  path: string;
  type?: EntryType;
  content?: string | Uint8Array;
  mode?: number;
  uid?: number;
  gid?: number;
  mtime?: Date;
  /** Symlink target, or the path a hardlink points to. */
  linkname?: string;
  devmajor?: number;
  devminor?: number;
  /** Written as PAX `SCHILY.xattr.NAME` records. */
  xattrs?: Record<string, string>;
}

export const file = (
  path: string,
  content: string | Uint8Array,
  extra: Partial<TarEntry> = {},
): TarEntry => ({
  path,
  type: 'file',
  content,
  ...extra,
});
export const dir = (path: string, extra: Partial<TarEntry> = {}): TarEntry => ({
  path,
  type: 'directory',
  ...extra,
});
export const symlink = (path: string, target: string, extra: Partial<TarEntry> = {}): TarEntry => ({
  path,
  type: 'symlink',
  linkname: target,
  ...extra,
});
export const hardlink = (path: string, target: string, extra: Partial<TarEntry> = {}): TarEntry => ({
  path,
  type: 'link',
  linkname: target,
  ...extra,
});
/** OCI whiteout for `path` (deletes it from the layers below). */
export const whiteout = (path: string): TarEntry => {
  const base = posix.basename(path);
  const parent = posix.dirname(path);
  return file(parent === '.' ? `.wh.${base}` : `${parent}/.wh.${base}`, '');
};
/** OCI opaque marker: hides everything below `dirPath` in lower layers. */
export const opaque = (dirPath: string): TarEntry => file(`${dirPath.replace(/\/+$/, '')}/.wh..wh..opq`, '');

/** Packs entries into an uncompressed tar, in order. */
export async function tarEntries(entries: readonly TarEntry[]): Promise<Buffer> {
  const pack = tar.pack();
  const chunks: Buffer[] = [];
  pack.on('data', (c: unknown) => chunks.push(c as Buffer));
  const done = new Promise<void>((resolve, reject) => {
    pack.on('end', resolve);
    pack.on('error', reject);
  });
  for (const e of entries) {
    const type = e.type ?? 'file';
    const body =
      type === 'file'
        ? typeof e.content === 'string'
          ? Buffer.from(e.content)
          : Buffer.from(e.content ?? [])
        : undefined;
    const pax = e.xattrs
      ? Object.fromEntries(Object.entries(e.xattrs).map(([k, v]) => [`SCHILY.xattr.${k}`, v]))
      : undefined;
    const header = {
      name: e.path,
      type,
      mode: e.mode ?? (type === 'directory' ? 0o755 : type === 'symlink' ? 0o777 : 0o644),
      uid: e.uid ?? 0,
      gid: e.gid ?? 0,
      mtime: e.mtime ?? FIXED_MTIME,
      linkname: e.linkname,
      devmajor: e.devmajor ?? 0,
      devminor: e.devminor ?? 0,
      size: body?.length ?? 0,
      ...(pax ? { pax } : {}),
    };
    await new Promise<void>((resolve, reject) => {
      if (body) pack.entry(header, body, (err) => (err ? reject(err) : resolve()));
      else pack.entry(header, (err) => (err ? reject(err) : resolve()));
    });
  }
  pack.finalize();
  await done;
  return Buffer.concat(chunks);
}

export const sha256 = (data: Uint8Array): string =>
  `sha256:${createHash('sha256').update(data).digest('hex')}`;

export interface BuiltLayer {
  /** Digest of the blob (compressed as asked). */
  digest: string;
  /** Digest of the uncompressed tar. */
  diffId: string;
  size: number;
  mediaType: string;
  data: Buffer;
  /** The uncompressed tar (for docker-save archives). */
  tar: Buffer;
  /** An artifact layer's annotations (its file name), written into the manifest. */
  annotations?: Record<string, string>;
}

export interface LayerSpec {
  entries: readonly TarEntry[];
  compression?: Compression;
}

export async function compress(data: Buffer, compression: Compression): Promise<Buffer> {
  if (compression === 'gzip') return gzip(data);
  if (compression === 'zstd') return zstdCompress(data);
  return data;
}

export async function buildLayer(spec: LayerSpec): Promise<BuiltLayer> {
  const compression = spec.compression ?? 'gzip';
  const raw = await tarEntries(spec.entries);
  const data = await compress(raw, compression);
  return {
    digest: sha256(data),
    diffId: sha256(raw),
    size: data.length,
    mediaType:
      compression === 'gzip' ? MEDIA.layerGzip : compression === 'zstd' ? MEDIA.layerZstd : MEDIA.layerTar,
    data,
    tar: raw,
  };
}

export const DEFAULT_PASSWD = [
  'root:x:0:0:root:/root:/bin/sh',
  'daemon:x:1:1:daemon:/usr/sbin:/bin/false',
  'nobody:x:65534:65534:nobody:/nonexistent:/bin/false',
  '',
].join('\n');
export const DEFAULT_GROUP = ['root:x:0:', 'daemon:x:1:', 'nobody:x:65534:', ''].join('\n');

let rootfsCache: Promise<TarEntry[]> | undefined;

/**
 * The busybox rootfs without /etc/passwd and /etc/group: the host's dynamic
 * busybox at /bin/busybox, its libraries at their host paths, one symlink per
 * applet in /bin, and the usual empty directories.
 */
export function busyboxRootfs(): Promise<TarEntry[]> {
  rootfsCache ??= (async () => {
    const busybox = '/usr/bin/busybox';
    const ldd = await runChecked('/usr/bin/ldd', [busybox]);
    const libs = new Set<string>();
    for (const line of ldd.stdout.split('\n')) {
      const m = /(?:=>\s*)?(\/\S+)\s+\(0x/.exec(line);
      if (m) libs.add(m[1]);
    }
    const applets = (await runChecked(busybox, ['--list'])).stdout
      .split('\n')
      .filter((a) => /^[\w.[-]+$/.test(a));
    const entries: TarEntry[] = [];
    const dirs = new Set<string>();
    const addDir = (d: string, mode = 0o755) => {
      if (d === '' || d === '.' || dirs.has(d)) return;
      addDir(posix.dirname(d) === '.' ? '' : posix.dirname(d));
      dirs.add(d);
      entries.push(dir(d, { mode }));
    };
    for (const d of [
      'bin',
      'sbin',
      'usr/bin',
      'usr/sbin',
      'etc',
      'root',
      'home',
      'var',
      'proc',
      'sys',
      'dev',
      'run',
    ])
      addDir(d, d === 'root' ? 0o700 : 0o755);
    addDir('tmp', 0o1777);
    entries.push(file('bin/busybox', await readFile(busybox), { mode: 0o755 }));
    for (const lib of libs) {
      const rel = lib.replace(/^\/+/, '');
      // Debian merges /lib into /usr/lib with a symlink; in the image the
      // libraries sit in real directories at the path ld.so searches.
      addDir(posix.dirname(rel));
      entries.push(file(rel, await readFile(lib), { mode: 0o755 }));
    }
    for (const applet of applets) {
      if (applet === 'busybox') continue;
      entries.push(symlink(`bin/${applet}`, 'busybox'));
    }
    return entries;
  })();
  return rootfsCache;
}

export interface ImageConfigOptions {
  entrypoint?: string[];
  cmd?: string[];
  env?: string[];
  user?: string;
  workingDir?: string;
  labels?: Record<string, string>;
  stopSignal?: string;
  exposedPorts?: string[];
  volumes?: string[];
}

export interface ImageSpec {
  /** Include the busybox rootfs (with /etc/passwd and /etc/group) as the first layer (default true). */
  base?: boolean;
  baseCompression?: Compression;
  /** Contents of /etc/passwd and /etc/group in the base layer. */
  passwd?: string;
  group?: string;
  /** Layers above the base, lowest first. */
  layers?: readonly LayerSpec[];
  config?: ImageConfigOptions;
  architecture?: string;
  os?: string;
  variant?: string;
  /** Manifest annotations. */
  annotations?: Record<string, string>;
  /** 'docker' writes a schema2 manifest, config and layer media types (gzip or none only). */
  mediaTypes?: MediaTypes;
}

/** A blob of a built image or index, by digest. */
export type Blobs = Map<string, Buffer>;

export interface BuiltImage {
  kind: 'image';
  manifest: Buffer;
  manifestDigest: string;
  mediaType: string;
  config: Buffer;
  configDigest: string;
  layers: BuiltLayer[];
  platform: { architecture: string; os: string; variant?: string };
  blobs: Blobs;
}

export interface BuiltIndex {
  kind: 'index';
  index: Buffer;
  indexDigest: string;
  mediaType: string;
  images: BuiltImage[];
  blobs: Blobs;
}

export const json = (value: unknown): Buffer => Buffer.from(JSON.stringify(value));

export async function buildImage(spec: ImageSpec = {}): Promise<BuiltImage> {
  const layers: BuiltLayer[] = [];
  if (spec.base ?? true) {
    const rootfs = await busyboxRootfs();
    layers.push(
      await buildLayer({
        entries: [
          ...rootfs,
          file('etc/passwd', spec.passwd ?? DEFAULT_PASSWD),
          file('etc/group', spec.group ?? DEFAULT_GROUP),
        ],
        compression: spec.baseCompression ?? 'gzip',
      }),
    );
  }
  for (const layer of spec.layers ?? []) layers.push(await buildLayer(layer));
  const c = spec.config ?? {};
  const platform = {
    architecture: spec.architecture ?? 'amd64',
    os: spec.os ?? 'linux',
    ...(spec.variant ? { variant: spec.variant } : {}),
  };
  const configJson = {
    created: FIXED_MTIME.toISOString(),
    ...platform,
    config: {
      Env: c.env ?? ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'],
      ...(c.entrypoint ? { Entrypoint: c.entrypoint } : {}),
      Cmd: c.cmd ?? ['sh'],
      ...(c.user !== undefined ? { User: c.user } : {}),
      ...(c.workingDir !== undefined ? { WorkingDir: c.workingDir } : {}),
      ...(c.labels ? { Labels: c.labels } : {}),
      ...(c.stopSignal ? { StopSignal: c.stopSignal } : {}),
      ...(c.exposedPorts ? { ExposedPorts: Object.fromEntries(c.exposedPorts.map((p) => [p, {}])) } : {}),
      ...(c.volumes ? { Volumes: Object.fromEntries(c.volumes.map((v) => [v, {}])) } : {}),
    },
    rootfs: { type: 'layers', diff_ids: layers.map((l) => l.diffId) },
    history: layers.map(() => ({ created: FIXED_MTIME.toISOString(), created_by: 'berth image-builder' })),
  };
  const config = json(configJson);
  const configDigest = sha256(config);
  const docker = spec.mediaTypes === 'docker';
  const manifestJson = {
    schemaVersion: 2,
    mediaType: docker ? MEDIA.dockerManifest : MEDIA.ociManifest,
    config: {
      mediaType: docker ? MEDIA.dockerConfig : MEDIA.ociConfig,
      digest: configDigest,
      size: config.length,
    },
    layers: layers.map((l) => ({
      mediaType: docker ? dockerLayerType(l.mediaType) : l.mediaType,
      digest: l.digest,
      size: l.size,
    })),
    ...(spec.annotations ? { annotations: spec.annotations } : {}),
  };
  const manifest = json(manifestJson);
  const manifestDigest = sha256(manifest);
  const blobs: Blobs = new Map();
  blobs.set(configDigest, config);
  blobs.set(manifestDigest, manifest);
  for (const l of layers) blobs.set(l.digest, l.data);
  return {
    kind: 'image',
    manifest,
    manifestDigest,
    mediaType: manifestJson.mediaType,
    config,
    configDigest,
    layers,
    platform,
    blobs,
  };
}

/**
 * A multi-arch index: the given images (usually one real amd64 image) plus,
 * by default, small fake images for arm64 and arm/v7 whose single layer holds
 * a marker file (they cannot run here; they exist for platform selection).
 */
/**
 * An OCI artifact as `oras push` makes one: the empty config, one layer per
 * file, org.opencontainers.image.title naming each (a file without `name` gets
 * no title), and the manifest's artifactType.
 */
export function buildArtifact(
  files: readonly { name?: string; content: string | Buffer }[],
  artifactType: string,
  config = Buffer.from('{}'),
): BuiltImage {
  const layers: BuiltLayer[] = files.map(({ name, content }) => {
    const data = Buffer.from(content);
    return {
      digest: sha256(data),
      diffId: sha256(data),
      size: data.length,
      mediaType: 'text/plain',
      data,
      tar: data,
      ...(name === undefined ? {} : { annotations: { 'org.opencontainers.image.title': name } }),
    };
  });
  const manifest = json({
    schemaVersion: 2,
    mediaType: MEDIA.ociManifest,
    artifactType,
    config: {
      mediaType: config.equals(Buffer.from('{}')) ? 'application/vnd.oci.empty.v1+json' : 'application/json',
      digest: sha256(config),
      size: config.length,
    },
    layers: layers.map((l) => ({
      mediaType: l.mediaType,
      digest: l.digest,
      size: l.size,
      ...(l.annotations ? { annotations: l.annotations } : {}),
    })),
  });
  const manifestDigest = sha256(manifest);
  const blobs: Blobs = new Map([
    [sha256(config), config],
    [manifestDigest, manifest],
    ...layers.map((l) => [l.digest, l.data] as [string, Buffer]),
  ]);
  return {
    kind: 'image',
    manifest,
    manifestDigest,
    mediaType: MEDIA.ociManifest,
    config,
    configDigest: sha256(config),
    layers,
    platform: { architecture: 'amd64', os: 'linux' },
    blobs,
  };
}

export async function buildIndex(
  images: readonly BuiltImage[],
  options: {
    fakePlatforms?: { architecture: string; os?: string; variant?: string }[];
    /** 'docker' writes a manifest list (and docker fake images) instead of an OCI index. */
    mediaTypes?: MediaTypes;
  } = {},
): Promise<BuiltIndex> {
  const docker = options.mediaTypes === 'docker';
  const fakes = options.fakePlatforms ?? [
    { architecture: 'arm64', variant: 'v8' },
    { architecture: 'arm', variant: 'v7' },
  ];
  const all = [...images];
  for (const p of fakes) {
    all.push(
      await buildImage({
        base: false,
        architecture: p.architecture,
        os: p.os ?? 'linux',
        variant: p.variant,
        layers: [
          { entries: [file('platform', `${p.os ?? 'linux'}/${p.architecture}/${p.variant ?? ''}\n`)] },
        ],
      }),
    );
  }
  const indexJson = {
    schemaVersion: 2,
    mediaType: docker ? MEDIA.dockerList : MEDIA.ociIndex,
    manifests: all.map((img) => ({
      mediaType: img.mediaType,
      digest: img.manifestDigest,
      size: img.manifest.length,
      platform: img.platform,
    })),
  };
  const index = json(indexJson);
  const indexDigest = sha256(index);
  const blobs: Blobs = new Map();
  for (const img of all) for (const [d, b] of img.blobs) blobs.set(d, b);
  blobs.set(indexDigest, index);
  return { kind: 'index', index, indexDigest, mediaType: indexJson.mediaType, images: all, blobs };
}

/**
 * Writes (or adds to) an OCI image layout at `layoutDir`: `oci-layout`,
 * `index.json` with one entry per tag (annotation
 * org.opencontainers.image.ref.name), and `blobs/sha256/*`.
 * Use with `skopeo copy oci:DIR:TAG docker://HOST/REPO:TAG`.
 */
export async function writeOciLayout(
  layoutDir: string,
  entries: readonly { tag: string; image: BuiltImage | BuiltIndex }[],
): Promise<void> {
  const blobDir = join(layoutDir, 'blobs', 'sha256');
  await mkdir(blobDir, { recursive: true });
  await writeFile(join(layoutDir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  let index: { schemaVersion: number; mediaType?: string; manifests: Record<string, unknown>[] } = {
    schemaVersion: 2,
    mediaType: MEDIA.ociIndex,
    manifests: [],
  };
  try {
    index = JSON.parse(await readFile(join(layoutDir, 'index.json'), 'utf8')) as typeof index;
  } catch {
    // a new layout
  }
  for (const { tag, image } of entries) {
    for (const [digest, data] of image.blobs) {
      await writeFile(join(blobDir, digest.slice('sha256:'.length)), data);
    }
    // skopeo's layout reader only looks at OCI-typed index.json entries; a
    // Docker manifest (list) is found through them and read by its content.
    const top =
      image.kind === 'image'
        ? { mediaType: MEDIA.ociManifest, digest: image.manifestDigest, size: image.manifest.length }
        : { mediaType: MEDIA.ociIndex, digest: image.indexDigest, size: image.index.length };
    index.manifests = index.manifests.filter(
      (m) =>
        (m.annotations as Record<string, string> | undefined)?.['org.opencontainers.image.ref.name'] !== tag,
    );
    index.manifests.push({ ...top, annotations: { 'org.opencontainers.image.ref.name': tag } });
  }
  await writeFile(join(layoutDir, 'index.json'), JSON.stringify(index));
}

/** Tars a directory tree (an OCI layout) into `outFile`, as `berth image import` reads it. */
export async function writeDirectoryTar(srcDir: string, outFile: string): Promise<void> {
  const entries: TarEntry[] = [];
  const walk = async (rel: string) => {
    const names = (await readdir(join(srcDir, rel))).sort();
    for (const name of names) {
      const relPath = rel ? `${rel}/${name}` : name;
      const info = await stat(join(srcDir, relPath));
      if (info.isDirectory()) {
        entries.push(dir(relPath));
        await walk(relPath);
      } else {
        entries.push(file(relPath, await readFile(join(srcDir, relPath))));
      }
    }
  };
  await walk('');
  await writeTarFile(outFile, entries);
}

async function writeTarFile(outFile: string, entries: readonly TarEntry[]): Promise<void> {
  const data = await tarEntries(entries);
  await pipeline(
    (async function* () {
      yield data;
    })(),
    createWriteStream(outFile),
  );
}

/**
 * Writes a classic `docker save` archive: manifest.json, repositories, the
 * config as <hex>.json and each layer uncompressed as <diffId hex>/layer.tar.
 * `repoTags` are written as given (docker writes short names like busybox:latest).
 */
export async function writeDockerArchive(
  outFile: string,
  images: readonly { image: BuiltImage; repoTags: string[] }[],
): Promise<void> {
  const entries: TarEntry[] = [];
  const seen = new Set<string>();
  const manifest: { Config: string; RepoTags: string[]; Layers: string[] }[] = [];
  const repositories: Record<string, Record<string, string>> = {};
  for (const { image, repoTags } of images) {
    const configName = `${image.configDigest.slice(7)}.json`;
    if (!seen.has(configName)) {
      seen.add(configName);
      entries.push(file(configName, image.config));
    }
    const layerNames: string[] = [];
    for (const layer of image.layers) {
      const hex = layer.diffId.slice(7);
      const name = `${hex}/layer.tar`;
      if (!seen.has(name)) {
        seen.add(name);
        entries.push(dir(hex), file(`${hex}/VERSION`, '1.0'), file(name, layer.tar));
      }
      layerNames.push(name);
    }
    manifest.push({ Config: configName, RepoTags: repoTags, Layers: layerNames });
    const top = image.layers.at(-1)?.diffId.slice(7) ?? '';
    for (const t of repoTags) {
      const colon = t.lastIndexOf(':');
      const repo = colon > t.lastIndexOf('/') ? t.slice(0, colon) : t;
      const tag = colon > t.lastIndexOf('/') ? t.slice(colon + 1) : 'latest';
      (repositories[repo] ??= {})[tag] = top;
    }
  }
  entries.push(
    file('manifest.json', JSON.stringify(manifest)),
    file('repositories', JSON.stringify(repositories)),
  );
  await writeTarFile(outFile, entries);
}

/**
 * Pushes an image or index to a registry through the distribution API with
 * its exact bytes (skopeo rewrites Docker manifest lists read from an OCI
 * layout). `registry` is e.g. "http://127.0.0.1:5000"; children of an index
 * are pushed by digest, the top by `tag`. Returns the top manifest's digest.
 */
export async function pushToRegistry(
  registry: string,
  repository: string,
  tag: string,
  image: BuiltImage | BuiltIndex,
  options: { authorization?: string } = {},
): Promise<string> {
  const headers = (extra: Record<string, string> = {}): Record<string, string> => ({
    ...(options.authorization ? { authorization: options.authorization } : {}),
    ...extra,
  });
  const base = `${registry.replace(/\/+$/, '')}/v2/${repository}`;
  const pushBlob = async (digest: string, data: Buffer) => {
    const head = await fetch(`${base}/blobs/${digest}`, { method: 'HEAD', headers: headers() });
    if (head.ok) return;
    const start = await fetch(`${base}/blobs/uploads/`, { method: 'POST', headers: headers() });
    if (start.status !== 202) throw new Error(`push ${digest}: upload start answered ${start.status}`);
    const location = new URL(start.headers.get('location')!, registry);
    location.searchParams.set('digest', digest);
    const put = await fetch(location, {
      method: 'PUT',
      headers: headers({ 'content-type': 'application/octet-stream' }),
      body: data,
    });
    if (put.status !== 201)
      throw new Error(`push ${digest}: upload answered ${put.status} ${await put.text()}`);
  };
  const pushManifest = async (ref: string, mediaType: string, data: Buffer) => {
    const res = await fetch(`${base}/manifests/${ref}`, {
      method: 'PUT',
      headers: headers({ 'content-type': mediaType }),
      body: data,
    });
    if (res.status !== 201)
      throw new Error(`push manifest ${ref}: answered ${res.status} ${await res.text()}`);
  };
  const pushImage = async (img: BuiltImage, ref: string) => {
    await pushBlob(img.configDigest, img.config);
    for (const l of img.layers) await pushBlob(l.digest, l.data);
    await pushManifest(ref, img.mediaType, img.manifest);
  };
  if (image.kind === 'image') {
    await pushImage(image, tag);
    return image.manifestDigest;
  }
  for (const child of image.images) await pushImage(child, child.manifestDigest);
  await pushManifest(tag, image.mediaType, image.index);
  return image.indexDigest;
}
