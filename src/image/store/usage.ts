/**
 * Disk usage (bytes in allocated blocks, inodes) of a directory tree, and the
 * mount point a path lives on, for ImageFsInfo. Walks asynchronously.
 */
import { lstat, readFile, readdir, realpath } from 'node:fs/promises';
import { join } from 'node:path';
import { errnoCode } from '../../errors.js';

export interface DiskUsage {
  bytes: bigint;
  inodes: bigint;
}

/** du-like: hardlinked inodes counted once; a missing directory is empty. */
export async function diskUsage(dir: string): Promise<DiskUsage> {
  const seen = new Set<string>();
  let bytes = 0n;
  const pending = [dir];
  while (pending.length > 0) {
    const path = pending.pop()!;
    let info;
    try {
      info = await lstat(path, { bigint: true });
    } catch (err) {
      // Entries come and go under a live store (temp files renamed, layers removed).
      if (errnoCode(err) === 'ENOENT') continue;
      throw err;
    }
    const key = `${info.dev}:${info.ino}`;
    if (seen.has(key)) continue;
    seen.add(key);
    bytes += info.blocks * 512n;
    if (info.isDirectory()) {
      let names: string[];
      try {
        names = await readdir(path);
      } catch (err) {
        if (errnoCode(err) === 'ENOENT') continue;
        throw err;
      }
      for (const name of names) pending.push(join(path, name));
    }
  }
  return { bytes, inodes: BigInt(seen.size) };
}

function unescapeMountinfo(text: string): string {
  return text.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

/** The mount point of the filesystem holding `path` (or its nearest existing parent). */
export async function mountpointOf(path: string): Promise<string> {
  let real = path;
  for (;;) {
    try {
      real = await realpath(real);
      break;
    } catch (err) {
      if (errnoCode(err) !== 'ENOENT' || real === '/') throw err;
      real = join(real, '..');
    }
  }
  const mounts = (await readFile('/proc/self/mountinfo', 'utf8'))
    .split('\n')
    .filter(Boolean)
    .map((line) => unescapeMountinfo(line.split(' ')[4]));
  let best = '/';
  for (const m of mounts) {
    if ((real === m || real.startsWith(m.endsWith('/') ? m : `${m}/`)) && m.length > best.length) best = m;
  }
  return best;
}
