/**
 * The few mounts a pod owns: its /dev/shm tmpfs and, for a multi-layer pause
 * image, a read-only overlay root. Unmounting is idempotent.
 */
import { readFile } from 'node:fs/promises';
import { mountFs, unmount } from '../util/mount.js';

/** Default size of a pod's /dev/shm (as CRI-O and Docker). */
export const SHM_SIZE = 64 * 1024 * 1024;

export async function mountShm(path: string, sizeBytes = SHM_SIZE): Promise<void> {
  await mountFs('tmpfs', 'shm', path, ['nosuid', 'nodev', 'noexec', 'mode=1777', `size=${sizeBytes}`]);
}

/**
 * An overlay of lowerDirs (highest first) at target with a private upper dir:
 * the runtime may create missing mount points in it without touching the
 * shared image layers (the spec still makes the root read-only).
 */
export async function mountOverlay(
  lowerDirs: string[],
  upperDir: string,
  workDir: string,
  target: string,
): Promise<void> {
  await mountFs('overlay', 'overlay', target, [
    `lowerdir=${lowerDirs.join(':')},upperdir=${upperDir},workdir=${workDir}`,
  ]);
}

/** Mount points at or below `path` (from /proc/self/mountinfo), deepest first. */
export async function mountsUnder(path: string): Promise<string[]> {
  const info = await readFile('/proc/self/mountinfo', 'utf8');
  const prefix = path.endsWith('/') ? path : `${path}/`;
  const found: string[] = [];
  for (const line of info.split('\n')) {
    const point = line.split(' ')[4];
    if (point === undefined) continue;
    // mountinfo escapes space, tab, newline and backslash as octal.
    const decoded = point.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8)));
    if (decoded === path || decoded.startsWith(prefix)) found.push(decoded);
  }
  return found.sort((a, b) => b.length - a.length);
}

/** Unmounts everything at or below `path` (lazily if busy). Idempotent. */
export async function unmountAll(path: string): Promise<void> {
  for (const point of await mountsUnder(path)) {
    try {
      await unmount(point);
      continue;
    } catch {
      // busy: detach it below
    }
    try {
      await unmount(point, true);
    } catch (err) {
      if ((await mountsUnder(point)).includes(point)) throw err;
    }
  }
}
