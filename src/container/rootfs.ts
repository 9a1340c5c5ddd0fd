/**
 * A container's root filesystem: an overlay of the image's unpacked layers
 * (read-only lowers) with a per-container upper and work dir. Lives under
 * <root>/containers/<id>/ and goes away whole on remove.
 */
import { mkdir, readFile, rm } from 'node:fs/promises';
import { dirname, join, relative, sep } from 'node:path';
import { InternalError, errnoCode } from '../errors.js';
import { run } from '../util/run.js';

const MOUNT = '/usr/bin/mount';
const UMOUNT = '/usr/bin/umount';

export interface RootfsPaths {
  /** <root>/containers/<id> */
  dir: string;
  upper: string;
  work: string;
  /** The mount point: the container's root.path. */
  merged: string;
  /** Empty lower for an image without layers. */
  empty: string;
}

export function rootfsPaths(containerDir: string): RootfsPaths {
  return {
    dir: containerDir,
    upper: join(containerDir, 'upper'),
    work: join(containerDir, 'work'),
    merged: join(containerDir, 'merged'),
    empty: join(containerDir, 'empty'),
  };
}

/** The deepest directory containing every path. */
function commonDir(paths: string[]): string {
  let common = dirname(paths[0]);
  while (!paths.every((p) => p.startsWith(common + sep)) && common !== sep) common = dirname(common);
  return common;
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
 * overlayfs wants the highest first. Lowers are given relative to their
 * common directory (mount runs there) so many layers fit the one-page limit
 * of mount options.
 */
export async function mountRootfs(paths: RootfsPaths, layers: string[]): Promise<void> {
  await mkdir(paths.dir, { recursive: true, mode: 0o700 });
  await Promise.all([
    mkdir(paths.upper, { recursive: true, mode: 0o755 }),
    mkdir(paths.work, { recursive: true, mode: 0o700 }),
    mkdir(paths.merged, { recursive: true, mode: 0o755 }),
  ]);
  let lowers = [...layers].reverse();
  let cwd: string | undefined;
  if (lowers.length === 0) {
    await mkdir(paths.empty, { recursive: true, mode: 0o755 });
    lowers = [paths.empty];
  } else if (lowers.length > 1) {
    cwd = commonDir(lowers);
    lowers = lowers.map((l) => relative(cwd!, l));
  }
  for (const p of [...lowers, paths.upper, paths.work]) {
    // overlayfs splits options at ',' and lowers at ':'; such paths cannot be expressed.
    if (/[,:]/.test(p)) throw new InternalError(`overlay path ${JSON.stringify(p)} contains ',' or ':'`);
  }
  const options = `lowerdir=${lowers.join(':')},upperdir=${paths.upper},workdir=${paths.work}`;
  const result = await run(MOUNT, ['-t', 'overlay', 'overlay', '-o', options, paths.merged], { cwd });
  if (result.code !== 0) {
    throw new InternalError(
      `mounting the overlay root filesystem at ${paths.merged}: ${result.stderr.trim() || `mount exited with ${result.code}`}`,
    );
  }
}

/** Unmounts the overlay if mounted (lazily when busy). Idempotent. */
export async function unmountRootfs(paths: RootfsPaths): Promise<void> {
  if (!(await isMountPoint(paths.merged))) return;
  const result = await run(UMOUNT, [paths.merged]);
  if (result.code === 0 || !(await isMountPoint(paths.merged))) return;
  const lazy = await run(UMOUNT, ['-l', paths.merged]);
  if (lazy.code !== 0 && (await isMountPoint(paths.merged))) {
    throw new InternalError(`unmounting ${paths.merged}: ${lazy.stderr.trim() || result.stderr.trim()}`);
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
