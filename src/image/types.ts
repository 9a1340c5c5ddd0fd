/**
 * The contract between image pulls (src/image/pull*), the local store
 * (src/image/store*) and the consumers (containers, sandboxes, RPCs).
 */
import type { Readable } from 'node:stream';

/** "sha256:<64 hex>". */
export type Digest = string;

/** OCI image config (application/vnd.oci.image.config.v1+json), the parts berth reads. */
export interface ImageConfigFile {
  architecture: string;
  os: string;
  variant?: string;
  created?: string;
  config?: {
    User?: string;
    Env?: string[];
    Entrypoint?: string[] | null;
    Cmd?: string[] | null;
    WorkingDir?: string;
    Labels?: Record<string, string> | null;
    StopSignal?: string;
    ExposedPorts?: Record<string, object>;
    Volumes?: Record<string, object> | null;
  };
  rootfs: { type: string; diff_ids: Digest[] };
  history?: unknown[];
}

export interface LayerRecord {
  /** Digest of the blob as stored/pulled (compressed or not). */
  blobDigest: Digest;
  mediaType: string;
  /** Blob size in bytes. */
  size: number;
  /** Digest of the uncompressed tar (from the config's rootfs.diff_ids). */
  diffId: Digest;
  /** chainID per the OCI image spec: identifies the unpacked layer directory. */
  chainId: Digest;
}

/** A layer of an OCI artifact: a blob kept as it came, shown as a file when it is named. */
export interface ArtifactFile {
  blobDigest: Digest;
  mediaType: string;
  size: number;
  /**
   * Its path in the artifact's directory (org.opencontainers.image.title, or
   * a model's org.cncf.model.filepath); '' for a layer that names none.
   */
  name: string;
}

/** What makes an ImageRecord an OCI artifact (KEP-4639 image volumes mount these). */
export interface ArtifactInfo {
  artifactType: string;
  configDigest: Digest;
  configMediaType: string;
  files: ArtifactFile[];
}

/** An image as berth knows it: complete only once committed. */
export interface ImageRecord {
  /** Image ID: the config digest (an artifact's: its manifest digest, as configs are often shared). */
  id: Digest;
  /** Normalised tags, e.g. "docker.io/library/busybox:1.36". */
  repoTags: string[];
  /** Normalised digests, e.g. "docker.io/library/busybox@sha256:…". */
  repoDigests: string[];
  /** Digest of the platform manifest this image came from. */
  manifestDigest: Digest;
  manifestMediaType: string;
  /** Sum of layer blob sizes plus the config size. */
  size: number;
  config: ImageConfigFile;
  /** Lowest layer first (none for an artifact). */
  layers: LayerRecord[];
  /** Nanoseconds since the epoch when berth committed the image. */
  createdAtNs: string;
  /** Set for an OCI artifact: no container runs from it; image volumes show its files. */
  artifact?: ArtifactInfo;
}

/** What a pull hands to the store to make an OCI artifact visible (every blob stored). */
export interface ArtifactCommit {
  manifestDigest: Digest;
  manifestMediaType: string;
  manifest: Uint8Array;
  artifact: ArtifactInfo;
  /** The index it was chosen from: its digest is another name of the artifact. */
  index?: { digest: Digest; bytes: Uint8Array };
  tag?: string;
  repository?: string;
}

/** What a pull or an import hands to the store to make an image visible. */
export interface ImageCommit {
  configDigest: Digest;
  manifestDigest: Digest;
  manifestMediaType: string;
  /** Raw manifest bytes, kept for ImageStatus verbose. */
  manifest: Uint8Array;
  layers: Omit<LayerRecord, 'chainId'>[];
  /** Tag to add (normalised), if the reference had one. */
  tag?: string;
  /** Repository (normalised, without tag) whose repoDigest this manifest gives. */
  repository?: string;
}

/** The local content-addressed store, as used by pulls and imports. */
export interface BlobSink {
  hasBlob(digest: Digest): Promise<boolean>;
  /**
   * Streams a blob in, verifying size and digest while it flows. Nothing is
   * visible under the digest unless both match.
   */
  putBlob(
    digest: Digest,
    expectedSize: number | undefined,
    body: Readable,
    signal?: AbortSignal,
  ): Promise<void>;
  readBlob(digest: Digest): Promise<Uint8Array>;
  /** True when the layer need not be fetched: its blob is stored, or the layer unpacked with its blob discarded. */
  hasLayerSource(layer: Omit<LayerRecord, 'chainId'>, parentChainId: Digest | undefined): Promise<boolean>;
  /** Unpacks a layer once from its stored blob (idempotent: an unpacked layer needs none); returns its directory. */
  unpackLayer(layer: Omit<LayerRecord, 'chainId'>, parentChainId: Digest | undefined): Promise<string>;
  /** Atomically records a complete image; returns it. */
  commitImage(commit: ImageCommit): Promise<ImageRecord>;
}
