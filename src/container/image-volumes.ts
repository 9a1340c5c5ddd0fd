/**
 * Image volumes (Kubernetes' `image` volume source, KEP-4639): a CRI Mount
 * that names an image instead of a host path. The image's unpacked layers (an
 * OCI artifact's: the directory of its named files) are mounted as a
 * read-only overlay (no upper dir) under the container's dir,
 * and the Mount becomes a read-only bind of it, or of `image_sub_path` inside
 * it, into the container. The mounts go with the container's dir on removal.
 */
import { mkdir, rm, stat, symlink } from 'node:fs/promises';
import { join } from 'node:path';
import { InvalidArgumentError, NotFoundError, errnoCode, errorMessage, InternalError } from '../errors.js';
import { Mount } from '../generated/api.js';
import { mountFs } from '../util/mount.js';
import { secureJoin } from '../util/safe-path.js';
import type { SandboxUserns } from '../sandbox/userns.js';
import { withIdmappedLayers } from './idmap.js';
import { rootfsPaths } from './rootfs.js';

export interface ImageVolumeImages {
  resolve(ref: string): Promise<{ record: { id: string } } | undefined>;
  /** What the volume shows, lowest first: an image's unpacked layers, or an artifact's files. */
  volumeDirs(record: { id: string }): string[];
}

/** An image volume as the container record keeps it (RemoveImage's in-use check). */
export interface ImageVolumeRecord {
  containerPath: string;
  imageId: string;
}

/** An image volume resolved before anything is made: the image it mounts. */
export interface PlannedImageVolume extends ImageVolumeRecord {
  /** Index of its Mount in ContainerConfig.mounts. */
  index: number;
  layerDirs: string[];
}

/** Resolves the image of every image volume (NOT_FOUND naming it when absent). */
export async function planImageVolumes(
  mounts: readonly Mount[],
  images: ImageVolumeImages,
  what: string,
): Promise<PlannedImageVolume[]> {
  const planned: PlannedImageVolume[] = [];
  for (const [index, mount] of mounts.entries()) {
    const ref = mount.image?.image ?? '';
    if (ref === '') continue;
    const dest = mount.containerPath;
    if (mount.hostPath !== '') {
      throw new InvalidArgumentError(
        `${what}: mount ${dest} names both host_path and image ${JSON.stringify(ref)}`,
      );
    }
    const resolved = await images.resolve(ref);
    if (!resolved) {
      throw new NotFoundError(
        `${what}: image ${JSON.stringify(ref)} of the image volume at ${dest} not found; pull it first`,
      );
    }
    planned.push({
      index,
      containerPath: dest,
      imageId: resolved.record.id,
      layerDirs: images.volumeDirs(resolved.record),
    });
  }
  return planned;
}

/**
 * Mounts the planned image volumes under the container's dir and returns the
 * CRI mounts with each turned into a read-only bind of its image (or of its
 * image_sub_path). On failure, what was mounted stays for the caller's undo
 * (which unmounts everything under the container's dir).
 */
export async function mountImageVolumes(
  mounts: readonly Mount[],
  planned: readonly PlannedImageVolume[],
  containerDir: string,
  what: string,
  userns?: SandboxUserns,
): Promise<Mount[]> {
  const out = [...mounts];
  for (const volume of planned) {
    const mount = mounts[volume.index];
    const dir = join(rootfsPaths(containerDir).imageVolumes, String(volume.index));
    const label = `${what}: image volume ${volume.containerPath}`;
    if (userns) {
      // In a pod user namespace the image's root-owned files must be the pod's root's, as in its rootfs.
      await mkdir(dir, { recursive: true, mode: 0o755 });
      await withIdmappedLayers(dir, volume.layerDirs, userns, (mapped) => mountImageRoot(dir, mapped, label));
    } else {
      await mountImageRoot(dir, volume.layerDirs, label);
    }
    const source = await subPathIn(dir, mount.imageSubPath, label);
    out[volume.index] = Mount.fromPartial({
      ...mount,
      hostPath: source,
      image: undefined,
      imageSubPath: '',
      readonly: true,
    });
  }
  return out;
}

/** A read-only overlay of the layers at `<dir>/root` (overlayfs needs two lowers without an upper). */
async function mountImageRoot(dir: string, layers: string[], what: string): Promise<void> {
  const target = join(dir, 'root');
  await Promise.all([
    mkdir(target, { recursive: true, mode: 0o755 }),
    mkdir(join(dir, 'l'), { recursive: true, mode: 0o700 }),
    mkdir(join(dir, 'empty'), { recursive: true, mode: 0o755 }),
  ]);
  const lowers: string[] = [];
  // Short links, as for a container's root: deep images still fit mount's one-page option limit.
  for (const [i, layer] of [...layers].reverse().entries()) {
    const link = join('l', String(i));
    await rm(join(dir, link), { force: true });
    await symlink(layer, join(dir, link));
    lowers.push(link);
  }
  while (lowers.length < 2) lowers.push('empty');
  try {
    await mountFs(
      'overlay',
      'overlay',
      target,
      // Only 'ro': nodev/nosuid here would be locked flags for the runtime in a pod user
      // namespace, whose read-only remount of the bind (without them) is then refused.
      ['ro', `lowerdir=${lowers.join(':')}`],
      dir,
    );
  } catch (err) {
    throw new InternalError(`${what}: mounting the image's layers: ${errorMessage(err)}`, { cause: err });
  }
}

/**
 * `<dir>/root/<subPath>` with symlinks resolved inside the image (an absolute
 * link restarts at the image's root, never the host's); it must exist.
 */
async function subPathIn(dir: string, subPath: string, what: string): Promise<string> {
  const root = join(dir, 'root');
  if (subPath === '') return root;
  if (subPath.startsWith('/') || subPath.split('/').includes('..')) {
    throw new InvalidArgumentError(
      `${what}: image_sub_path ${JSON.stringify(subPath)} must be relative, without '..'`,
    );
  }
  const resolved = await secureJoin(root, subPath);
  try {
    await stat(resolved);
  } catch (err) {
    if (errnoCode(err) !== 'ENOENT' && errnoCode(err) !== 'ENOTDIR') throw err;
    throw new InvalidArgumentError(
      `${what}: image_sub_path ${JSON.stringify(subPath)} does not exist in the image`,
    );
  }
  return resolved;
}
