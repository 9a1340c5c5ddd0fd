/**
 * A container's root filesystem: an overlay of the image's unpacked layers
 * (read-only lowers) with a per-container upper and work dir. Lives under
 * <root>/containers/<id>/ and goes away whole on remove.
 */
import { mkdir, readFile, rm, symlink } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { InternalError, errnoCode, errorMessage } from '../errors.js';
import { mountFs, unmount } from '../util/mount.js';

export interface RootfsPaths {
  /** <root>/containers/<id> */
  dir: string;
  upper: string;
  work: string;
  /** The mount point: the container's root.path. */
  merged: string;
  /** Empty lower for an image without layers. */
  empty: string;
  /** Read-only mounts of the images its image volumes name (image-volumes.ts). */
  imageVolumes: string;
}

export function rootfsPaths(containerDir: string): RootfsPaths {
  return {
    dir: containerDir,
    upper: join(containerDir, 'upper'),
    work: join(containerDir, 'work'),
    merged: join(containerDir, 'merged'),
    empty: join(containerDir, 'empty'),
    imageVolumes: join(containerDir, 'image-volumes'),
  };
}

/** Decodes mountinfo's octal escapes (\040 for space). */
function unescapeMount(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

export async function isMountPoint(path: string): Promise<boolean> {
  const text = await readFile('/proc/self/mountinfo', 'utf8');
  return text.split('\n').some((line) => unescapeMount(line.split(' ')[4] ?? '') === path);
}

/**
 * Mounts the overlay. `layers` are lowest first (ImageManager.layerDirs);
 * overlayfs wants the highest first. Lowers are reached through short links
 * in the container dir (l/0, l/1, ...) and mount runs there, so even the
 * deepest images fit the one-page limit of mount options.
 */
export async function mountRootfs(paths: RootfsPaths, layers: string[]): Promise<void> {
  await mkdir(paths.dir, { recursive: true, mode: 0o700 });
  await Promise.all([
    mkdir(paths.upper, { recursive: true, mode: 0o755 }),
    mkdir(paths.work, { recursive: true, mode: 0o700 }),
    mkdir(paths.merged, { recursive: true, mode: 0o755 }),
    mkdir(join(paths.dir, 'l'), { recursive: true, mode: 0o700 }),
  ]);
  let lowers: string[];
  if (layers.length === 0) {
    await mkdir(paths.empty, { recursive: true, mode: 0o755 });
    lowers = [relative(paths.dir, paths.empty)];
  } else {
    lowers = [];
    for (const [i, layer] of [...layers].reverse().entries()) {
      const link = join('l', String(i));
      await rm(join(paths.dir, link), { force: true });
      await symlink(layer, join(paths.dir, link));
      lowers.push(link);
    }
  }
  const options = `lowerdir=${lowers.join(':')},upperdir=${relative(paths.dir, paths.upper)},workdir=${relative(paths.dir, paths.work)}`;
  try {
    await mountFs('overlay', 'overlay', paths.merged, [options], paths.dir);
  } catch (err) {
    throw new InternalError(`the overlay root filesystem: ${errorMessage(err)}`, { cause: err });
  }
}

/** Unmounts the overlay if mounted (lazily when busy). Idempotent. */
export async function unmountRootfs(paths: RootfsPaths): Promise<void> {
  if (!(await isMountPoint(paths.merged))) return;
  try {
    await unmount(paths.merged);
    return;
  } catch {
    // busy: detach it below
  }
  try {
    await unmount(paths.merged, true);
  } catch (err) {
    if (await isMountPoint(paths.merged)) {
      throw new InternalError(`root filesystem of ${paths.dir}: ${errorMessage(err)}`, { cause: err });
    }
  }
}

/** Unmounts and deletes everything of the container's storage. Idempotent. */
export async function removeRootfs(paths: RootfsPaths): Promise<void> {
  await unmountRootfs(paths);
  try {
    await rm(paths.dir, { recursive: true, force: true, maxRetries: 3 });
  } catch (err) {
    if (errnoCode(err) !== 'ENOENT') throw err;
  }
}
