/**
 * Manifests as registries serve them: OCI and Docker schema2 image manifests,
 * OCI indexes and Docker manifest lists; parsing with validation, and the
 * choice of the manifest for this node's platform.
 */
import { FailedPreconditionError, NotFoundError, UnavailableError, errorMessage } from '../../errors.js';
import { compressionOfMediaType } from '../layer/decompress.js';
import { artifactFileName } from '../store/artifacts.js';
import type { ArtifactInfo } from '../types.js';

export const MEDIA_TYPES = {
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  dockerSchema1: 'application/vnd.docker.distribution.manifest.v1+json',
  dockerSchema1Signed: 'application/vnd.docker.distribution.manifest.v1+prettyjws',
  ociConfig: 'application/vnd.oci.image.config.v1+json',
  dockerConfig: 'application/vnd.docker.container.image.v1+json',
} as const;

/** What berth asks registries for, most wanted first. */
export const MANIFEST_ACCEPT = [
  MEDIA_TYPES.ociIndex,
  MEDIA_TYPES.dockerList,
  MEDIA_TYPES.ociManifest,
  MEDIA_TYPES.dockerManifest,
] as const;

const LAYER_TYPES = new Set([
  'application/vnd.oci.image.layer.v1.tar',
  'application/vnd.oci.image.layer.v1.tar+gzip',
  'application/vnd.oci.image.layer.v1.tar+zstd',
  'application/vnd.oci.image.layer.nondistributable.v1.tar',
  'application/vnd.oci.image.layer.nondistributable.v1.tar+gzip',
  'application/vnd.oci.image.layer.nondistributable.v1.tar+zstd',
  'application/vnd.docker.image.rootfs.diff.tar',
  'application/vnd.docker.image.rootfs.diff.tar.gzip',
  'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip',
]);

const DIGEST = /^sha256:[a-f0-9]{64}$/;

export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
}

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  platform?: Platform;
  /** String-valued annotations (an artifact's layers name their files there). */
  annotations?: Record<string, string>;
}

export interface ImageManifest {
  kind: 'manifest';
  mediaType: string;
  config: Descriptor;
  layers: Descriptor[];
  /**
   * Set when the manifest describes an OCI artifact rather than a container
   * image: its `artifactType`, or else its config's media type.
   */
  artifactType?: string;
}

export interface IndexManifest {
  kind: 'index';
  mediaType: string;
  manifests: Descriptor[];
}

export type ParsedManifest = ImageManifest | IndexManifest;

function malformed(what: string, why: string): UnavailableError {
  // The registry sent something unusable: retrying elsewhere may help, the reference is fine.
  return new UnavailableError(`${what} is malformed: ${why}`);
}

function descriptor(what: string, value: unknown, field: string): Descriptor {
  if (typeof value !== 'object' || value === null) throw malformed(what, `${field} is not an object`);
  const d = value as Record<string, unknown>;
  if (typeof d.digest !== 'string' || !DIGEST.test(d.digest)) {
    throw malformed(what, `${field} has no sha256 digest`);
  }
  if (typeof d.size !== 'number' || !Number.isSafeInteger(d.size) || d.size < 0) {
    throw malformed(what, `${field} has no valid size`);
  }
  const out: Descriptor = {
    mediaType: typeof d.mediaType === 'string' ? d.mediaType : '',
    digest: d.digest,
    size: d.size,
  };
  if (typeof d.annotations === 'object' && d.annotations !== null && !Array.isArray(d.annotations)) {
    const strings = Object.entries(d.annotations).filter(
      (e): e is [string, string] => typeof e[1] === 'string',
    );
    if (strings.length > 0) out.annotations = Object.fromEntries(strings);
  }
  const p = d.platform as Record<string, unknown> | undefined;
  if (p && typeof p === 'object' && typeof p.os === 'string' && typeof p.architecture === 'string') {
    out.platform = {
      os: p.os,
      architecture: p.architecture,
      ...(typeof p.variant === 'string' && p.variant !== '' ? { variant: p.variant } : {}),
    };
  }
  return out;
}

/**
 * Parses manifest bytes. `contentType` is the registry's Content-Type; the
 * document's own mediaType and shape decide when it is missing or generic.
 */
export function parseManifest(bytes: Uint8Array, contentType: string, what: string): ParsedManifest {
  let doc: Record<string, unknown>;
  try {
    doc = JSON.parse(Buffer.from(bytes).toString('utf8')) as Record<string, unknown>;
  } catch (err) {
    throw malformed(what, `not JSON (${errorMessage(err)})`);
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc))
    throw malformed(what, 'not a JSON object');
  const declared = typeof doc.mediaType === 'string' ? doc.mediaType : '';
  let mediaType = declared || contentType;
  if (
    mediaType === MEDIA_TYPES.dockerSchema1 ||
    mediaType === MEDIA_TYPES.dockerSchema1Signed ||
    doc.schemaVersion === 1
  ) {
    throw new FailedPreconditionError(
      `${what} is a Docker schema 1 manifest, which berth does not support; push the image again with a current client`,
    );
  }
  if (
    mediaType !== MEDIA_TYPES.ociIndex &&
    mediaType !== MEDIA_TYPES.dockerList &&
    mediaType !== MEDIA_TYPES.ociManifest &&
    mediaType !== MEDIA_TYPES.dockerManifest
  ) {
    // application/json or octet-stream: judge by shape.
    mediaType = Array.isArray(doc.manifests) ? MEDIA_TYPES.ociIndex : MEDIA_TYPES.ociManifest;
  }
  if (mediaType === MEDIA_TYPES.ociIndex || mediaType === MEDIA_TYPES.dockerList) {
    if (!Array.isArray(doc.manifests)) throw malformed(what, 'an index without "manifests"');
    return {
      kind: 'index',
      mediaType,
      manifests: doc.manifests.map((m, i) => descriptor(what, m, `manifests[${i}]`)),
    };
  }
  if (!Array.isArray(doc.layers)) throw malformed(what, 'a manifest without "layers"');
  const config = descriptor(what, doc.config, 'config');
  const layers = doc.layers.map((l, i) => descriptor(what, l, `layers[${i}]`));
  const artifactType = artifactTypeOf(doc, mediaType, config);
  // An artifact's layers are files kept as they are, whatever their media type.
  if (artifactType !== undefined) return { kind: 'manifest', mediaType, config, layers, artifactType };
  for (const [i, l] of layers.entries()) {
    if (
      l.mediaType !== '' &&
      !LAYER_TYPES.has(l.mediaType) &&
      compressionOfMediaType(l.mediaType) === undefined
    ) {
      throw new FailedPreconditionError(
        `${what}: layer ${i} (${l.digest}) has media type ${l.mediaType}, which berth cannot unpack`,
      );
    }
  }
  return { kind: 'manifest', mediaType, config, layers };
}

/** What the store records of an artifact's manifest: its type, its config, its layers as files. */
export function artifactInfoOf(manifest: ImageManifest, artifactType: string): ArtifactInfo {
  return {
    artifactType,
    configDigest: manifest.config.digest,
    configMediaType: manifest.config.mediaType,
    files: manifest.layers.map((l) => ({
      blobDigest: l.digest,
      mediaType: l.mediaType,
      size: l.size,
      name: artifactFileName(l.annotations),
    })),
  };
}

/**
 * The artifact type when a manifest is an OCI artifact (image-spec's rule,
 * as CRI-O applies it): an OCI manifest that declares `artifactType`, or any
 * manifest whose config is not an image config (a Helm chart's, the empty
 * descriptor of a plain file set, a model's).
 */
function artifactTypeOf(
  doc: Record<string, unknown>,
  mediaType: string,
  config: Descriptor,
): string | undefined {
  const declared = typeof doc.artifactType === 'string' ? doc.artifactType : '';
  if (declared !== '' && mediaType === MEDIA_TYPES.ociManifest) return declared;
  const imageConfig =
    config.mediaType === '' ||
    config.mediaType === MEDIA_TYPES.ociConfig ||
    config.mediaType === MEDIA_TYPES.dockerConfig;
  return imageConfig ? undefined : declared || config.mediaType;
}

const NODE_ARCH: Record<string, string> = {
  x64: 'amd64',
  arm64: 'arm64',
  arm: 'arm',
  ia32: '386',
  s390x: 's390x',
  ppc64: 'ppc64le',
  riscv64: 'riscv64',
  loong64: 'loong64',
  mips: 'mips',
  mipsel: 'mipsle',
};

/** This node's platform, in OCI terms. */
export function nodePlatform(): Platform {
  const architecture = NODE_ARCH[process.arch] ?? process.arch;
  if (architecture === 'arm64') return { os: 'linux', architecture, variant: 'v8' };
  if (architecture === 'arm') {
    const v = (process.config.variables as { arm_version?: string | number }).arm_version;
    return { os: 'linux', architecture, variant: `v${v ?? 7}` };
  }
  return { os: 'linux', architecture };
}

export function formatPlatform(p: Platform | undefined): string {
  if (!p) return 'unknown platform';
  return [p.os, p.architecture, p.variant].filter(Boolean).join('/');
}

/** Variant number ("v7" → 7), or undefined. */
function variantLevel(v: string | undefined): number | undefined {
  const m = /^v(\d+)$/.exec(v ?? '');
  return m ? Number(m[1]) : undefined;
}

/**
 * How well an index entry fits the node: undefined when it cannot run here,
 * else a rank (higher is better). An exact variant beats an absent one; on
 * arm a lower variant runs on a higher CPU (v6 on v7), ranked below exact.
 */
export function platformRank(entry: Platform | undefined, node: Platform): number | undefined {
  if (!entry) return undefined;
  if (entry.os !== node.os || entry.architecture !== node.architecture) return undefined;
  const want = node.variant;
  const have = entry.variant;
  if (have === want) return 100;
  if (node.architecture === 'arm64') {
    // arm64 without a variant means v8.
    if ((have ?? 'v8') === (want ?? 'v8')) return 100;
    return undefined;
  }
  if (have === undefined) return 50;
  const h = variantLevel(have);
  const w = variantLevel(want);
  if (node.architecture === 'amd64') {
    // amd64 micro-architecture levels (v2, v3…) need CPU features berth does not probe.
    return have === 'v1' ? 90 : undefined;
  }
  if (h !== undefined && w !== undefined && h <= w) return 50 + h;
  return undefined;
}

/** The index entry for the node's platform; NOT_FOUND listing what the index offers. */
export function selectPlatform(index: IndexManifest, node: Platform, what: string): Descriptor {
  let best: { d: Descriptor; rank: number } | undefined;
  for (const d of index.manifests) {
    const rank = platformRank(d.platform, node);
    if (rank !== undefined && (!best || rank > best.rank)) best = { d, rank };
  }
  if (best) return best.d;
  const offered = [...new Set(index.manifests.map((d) => formatPlatform(d.platform)))];
  throw new NotFoundError(
    `${what} has no image for ${formatPlatform(node)}; it offers ${offered.length ? offered.join(', ') : 'no platforms'}`,
  );
}
