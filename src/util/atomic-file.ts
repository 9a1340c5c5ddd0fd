import { open, rename, mkdir, unlink, writeFile } from 'node:fs/promises';
import { dirname, basename, join } from 'node:path';
import { randomBytes } from 'node:crypto';

/** fsync a file (its data and size) or a directory (its entries) by path. */
async function fsyncPath(path: string): Promise<void> {
  const handle = await open(path, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** fsync a directory so a rename inside it survives a crash. */
export const fsyncDir = fsyncPath;

/** fsync a file written by other means (copyFile) before a rename makes it visible. */
export const fsyncFile = fsyncPath;

/** A fresh hidden temp name beside `path` (whose directory is made if missing). */
async function tempBeside(path: string): Promise<string> {
  const dir = dirname(path);
  await mkdir(dir, { recursive: true });
  return join(dir, `.${basename(path)}.${randomBytes(6).toString('hex')}.tmp`);
}

/**
 * Crash-safe replace: write a temp file beside the target, fsync it, rename it
 * over the target and fsync the directory. A reader sees the old or the new
 * content, never a torn file. `durable: false` skips the directory's fsync:
 * after a power loss the change may be lost, yet whatever is there is whole
 * (the data reached the disk before the rename could).
 */
export async function writeFileAtomic(
  path: string,
  data: string | Uint8Array,
  options: { mode?: number; durable?: boolean } = {},
): Promise<void> {
  const temp = await tempBeside(path);
  const handle = await open(temp, 'wx', options.mode ?? 0o600);
  try {
    await handle.writeFile(data);
    await handle.sync();
  } catch (err) {
    await handle.close().catch(() => undefined);
    await unlink(temp).catch(() => undefined);
    throw err;
  }
  await handle.close();
  try {
    await rename(temp, path);
  } catch (err) {
    await unlink(temp).catch(() => undefined);
    throw err;
  }
  if (options.durable ?? true) await fsyncDir(dirname(path));
}

/** The JSON form of state files. */
export function serializeJson(value: unknown): string {
  return JSON.stringify(value, null, 2) + '\n';
}

export async function writeJsonAtomic(
  path: string,
  value: unknown,
  options: { mode?: number; durable?: boolean } = {},
): Promise<void> {
  await writeFileAtomic(path, serializeJson(value), options);
}

/**
 * Replace without fsync: temp file + rename, so a reader never sees a torn
 * file, but a power loss may lose it. For files that only matter while the
 * processes using them live (a pod's resolv.conf, a bundle's config.json,
 * records under the tmpfs run_root), which a power loss ends as well.
 */
export async function writeFileReplace(
  path: string,
  data: string | Uint8Array,
  options: { mode?: number } = {},
): Promise<void> {
  const temp = await tempBeside(path);
  try {
    await writeFile(temp, data, { mode: options.mode ?? 0o600, flag: 'wx' });
    await rename(temp, path);
  } catch (err) {
    await unlink(temp).catch(() => undefined);
    throw err;
  }
}
