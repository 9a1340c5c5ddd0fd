/**
 * OCI artifacts' files under `<dir>/<manifest hex>/files`: each named layer
 * hard-linked from its blob, so a model of many GiB takes no second copy.
 * The tree is made in a temp dir, flushed and renamed whole: a directory that
 * exists is complete. Image volumes show it read-only (an overlay, as for an
 * image's layers).
 */
import { chmod, link, mkdir, rename, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { errnoCode } from '../../errors.js';
import type { Logger } from '../../log.js';
import { fsyncDir } from '../../util/atomic-file.js';
import type { ArtifactFile, Digest } from '../types.js';
import { digestHex, type BlobStore } from './blobs.js';
import { DigestDirs } from './digest-dirs.js';

/** Annotations that name a layer's file, first found wins (the second is CNCF ModelPack's). */
export const ARTIFACT_NAME_ANNOTATIONS = ['org.opencontainers.image.title', 'org.cncf.model.filepath'];

/** The file name an artifact layer's annotations give it ('' for none). */
export function artifactFileName(annotations: Record<string, string> | undefined): string {
  for (const key of ARTIFACT_NAME_ANNOTATIONS) {
    const name = annotations?.[key];
    if (name) return name;
  }
  return '';
}

/**
 * Why the named files cannot form one directory tree inside the artifact
 * (undefined when they can): a name must be relative, without '.', '..' or
 * empty components, and no two may claim the same path or a path and a
 * directory above it.
 */
export function artifactNamesProblem(files: readonly ArtifactFile[]): string | undefined {
  /** File path → the layer naming it; directory path → a layer under it. */
  const fileOf = new Map<string, number>();
  const dirOf = new Map<string, number>();
  for (const [i, f] of files.entries()) {
    if (f.name === '') continue;
    const what = `layer ${i} (${f.blobDigest}) is named ${JSON.stringify(f.name)}`;
    const parts = f.name.split('/');
    if (f.name.includes('\0') || parts.some((p) => p === '' || p === '.' || p === '..')) {
      return `${what}: not a relative path inside the artifact`;
    }
    const twin = fileOf.get(f.name);
    if (twin !== undefined) return `${what}, as is layer ${twin}`;
    const inside = dirOf.get(f.name);
    if (inside !== undefined) return `${what}, the directory layer ${inside}'s file lies in`;
    for (let k = 1; k < parts.length; k++) {
      const above = parts.slice(0, k).join('/');
      const file = fileOf.get(above);
      if (file !== undefined) return `${what}, under layer ${file}'s file ${JSON.stringify(above)}`;
      if (!dirOf.has(above)) dirOf.set(above, i);
    }
    fileOf.set(f.name, i);
  }
  return undefined;
}

export class ArtifactStore extends DigestDirs {
  constructor(
    dir: string,
    private readonly blobs: BlobStore,
    log: Logger,
  ) {
    super(dir, log, 'artifact');
  }

  /** The directory an image volume of this artifact shows. */
  filesDir(manifestDigest: Digest): string {
    return join(this.treeDir(manifestDigest), 'files');
  }

  has(manifestDigest: Digest): Promise<boolean> {
    return this.isDir(this.filesDir(manifestDigest));
  }

  /** Makes the files tree of an artifact whose blobs are all stored (idempotent). */
  async materialize(manifestDigest: Digest, files: readonly ArtifactFile[]): Promise<void> {
    if (await this.has(manifestDigest)) return;
    const problem = artifactNamesProblem(files);
    if (problem) throw new Error(`artifact ${manifestDigest}: ${problem}`);
    const temp = this.tempDir(digestHex(manifestDigest).slice(0, 16));
    try {
      const root = join(temp, 'files');
      const made = new Set<string>([temp]);
      await mkdir(root, { recursive: true, mode: 0o755 });
      made.add(root);
      for (const f of files) {
        if (f.name === '') continue;
        const target = join(root, ...f.name.split('/'));
        for (let d = dirname(target); !made.has(d); d = dirname(d)) made.add(d);
        await mkdir(dirname(target), { recursive: true, mode: 0o755 });
        const blob = this.blobs.path(f.blobDigest);
        // Readable by any pod user; a blob is never written after it is stored.
        await chmod(blob, 0o444);
        await link(blob, target);
      }
      // Names durable before the rename makes the tree visible (the links' data already is).
      for (const d of made) await fsyncDir(d);
      try {
        await rename(temp, this.treeDir(manifestDigest));
      } catch (err) {
        // Another process (an import beside the daemon) made the same tree first: as good.
        if (errnoCode(err) !== 'ENOTEMPTY' && errnoCode(err) !== 'EEXIST') throw err;
      }
      await fsyncDir(this.dir);
    } finally {
      await rm(temp, { recursive: true, force: true });
    }
  }
}
