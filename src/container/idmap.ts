/**
 * The root filesystem of a container in a pod user namespace: the usual
 * overlay (rootfs.ts), but its lower layers are read-only ID-mapped clones of
 * the image layers (through the pod's pinned user namespace), so files the
 * image gives to root belong to the pod's root, and its upper dir and the
 * container dir belong to the pod's root on the host (the runtime reaches the
 * rootfs from inside the namespace; what the container writes shows on the
 * host as the mapped IDs).
 *
 * The mapped clones sit in <container dir>/idmap only until the overlay is
 * mounted (overlayfs keeps its own references to its layers); a crash in
 * between leaves them for removeContainerRootfs, which detaches them before
 * it deletes the dir.
 */
import { chmod, chown, mkdir, readdir, rmdir, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { errnoCode } from '../errors.js';
import { idmapMount } from '../oci/userns/helper.js';
import { hostIdOf } from '../oci/userns/mappings.js';
import { mountsUnder, unmountAll } from '../sandbox/mounts.js';
import type { SandboxUserns } from '../sandbox/userns.js';
import { mountRootfs, removeRootfs, type RootfsPaths } from './rootfs.js';

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return false;
    throw err;
  }
}

function scratchDir(containerDir: string): string {
  return join(containerDir, 'idmap');
}

/** Mounts the container's overlay with ID-mapped lowers; the caller's undo (removeRootfs) cleans a failure. */
export async function mountIdmappedRootfs(
  paths: RootfsPaths,
  layers: string[],
  userns: SandboxUserns,
): Promise<void> {
  const uid = hostIdOf(userns.uids, 0)!;
  const gid = hostIdOf(userns.gids, 0)!;
  await mkdir(paths.dir, { recursive: true, mode: 0o700 });
  // The runtime resolves the rootfs path as the pod's root: <root>/containers must be searchable.
  const parent = dirname(paths.dir);
  const mode = (await stat(parent)).mode & 0o7777;
  if ((mode & 0o001) === 0) await chmod(parent, mode | 0o011);
  await chown(paths.dir, uid, gid);
  await mkdir(paths.upper, { recursive: true, mode: 0o755 });
  await chown(paths.upper, uid, gid);
  await withIdmappedLayers(paths.dir, layers, userns, (mapped) => mountRootfs(paths, mapped));
}

/**
 * Mounts ID-mapped clones of `layers` (through the pod's user namespace) in
 * `<dir>/idmap`, hands them to `use` (which mounts an overlay on them: overlayfs
 * keeps its own references) and detaches them again, whatever happens.
 */
export async function withIdmappedLayers(
  dir: string,
  layers: string[],
  userns: SandboxUserns,
  use: (mapped: string[]) => Promise<void>,
): Promise<void> {
  const scratch = scratchDir(dir);
  await mkdir(scratch, { mode: 0o700 });
  const mapped = layers.map((_, i) => join(scratch, String(i)));
  try {
    await Promise.all(mapped.map((layerDir) => mkdir(layerDir, { mode: 0o700 })));
    await idmapMount(
      userns.path,
      layers.map((layer, i) => [layer, mapped[i]]),
    );
    await use(mapped);
  } finally {
    await removeIdmapScratch(dir);
  }
}

/** Detaches and removes the ID-mapped scratch mounts of a container dir. Idempotent. */
export async function removeIdmapScratch(containerDir: string): Promise<void> {
  const scratch = scratchDir(containerDir);
  await unmountAll(scratch);
  if ((await mountsUnder(scratch)).length > 0) throw new Error(`${scratch} is still mounted`);
  // Empty mount points only (rmdir, never a recursive delete that could reach into a layer).
  let entries: string[];
  try {
    entries = await readdir(scratch);
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return;
    throw err;
  }
  for (const entry of entries) await rmdir(join(scratch, entry));
  await rmdir(scratch);
}

/** removeRootfs, after any ID-mapped scratch mounts a crash left (so nothing is deleted through them). */
export async function removeContainerRootfs(paths: RootfsPaths): Promise<void> {
  await removeIdmapScratch(paths.dir);
  // Image volumes are read-only mounts inside the dir that removeRootfs deletes (most
  // containers have none: no mount table read for them).
  if (await exists(paths.imageVolumes)) await unmountAll(paths.imageVolumes);
  await removeRootfs(paths);
}
