import { mkdir, open, readdir, statfs, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { InternalError, InvalidArgumentError, errnoCode, errorMessage } from '../../errors.js';
import { newNetnsAt, unmount } from '../../util/mount.js';

/** f_type of a bind-mounted namespace file (linux/magic.h NSFS_MAGIC). */
const NSFS_MAGIC = 0x6e736673;
const SAFE_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;

export function netnsDir(runRoot: string): string {
  return join(runRoot, 'netns');
}

/** Path of the persistent netns berth keeps for a pod. */
export function netnsPath(runRoot: string, podId: string): string {
  if (!SAFE_NAME.test(podId))
    throw new InvalidArgumentError(`pod id ${JSON.stringify(podId)} is not a valid netns name`);
  return join(netnsDir(runRoot), podId);
}

/** True when `path` is a live (bind-mounted) namespace, false when missing or a plain file. */
export async function isNetns(path: string): Promise<boolean> {
  try {
    return Number((await statfs(path)).type) === NSFS_MAGIC;
  } catch (err) {
    if (errnoCode(err) === 'ENOENT' || errnoCode(err) === 'ENOTDIR') return false;
    throw err;
  }
}

/**
 * Creates a network namespace that outlives any process: bind-mounted onto
 * its file under run_root (created here first).
 */
export async function createNetns(runRoot: string, podId: string): Promise<string> {
  const path = netnsPath(runRoot, podId);
  await mkdir(netnsDir(runRoot), { recursive: true, mode: 0o711 });
  try {
    await (await open(path, 'wx', 0o444)).close();
  } catch (err) {
    if (errnoCode(err) === 'EEXIST')
      throw new InternalError(`network namespace for pod ${podId} already exists at ${path}`);
    throw err;
  }
  let why = '';
  try {
    await newNetnsAt(path);
  } catch (err) {
    why = errorMessage(err);
  }
  if (why || !(await isNetns(path))) {
    // Undo: a failed attempt may still have mounted; removal copes with both.
    await removeNetns(path).catch(() => undefined);
    throw new InternalError(
      `cannot create network namespace for pod ${podId} at ${path}: ${why || 'no namespace mounted there'}`,
    );
  }
  return path;
}

/**
 * Unmounts (lazily, so an open handle elsewhere cannot make it fail) and
 * deletes a namespace file. Idempotent: a missing or unmounted file is fine.
 */
export async function removeNetns(path: string): Promise<void> {
  // A file may have been mounted over more than once; unmount until plain.
  for (let i = 0; i < 8 && (await isNetns(path)); i++) {
    try {
      await unmount(path, true);
    } catch (err) {
      if (await isNetns(path))
        throw new InternalError(`cannot unmount network namespace ${path}: ${errorMessage(err)}`);
    }
  }
  try {
    await unlink(path);
  } catch (err) {
    if (errnoCode(err) !== 'ENOENT')
      throw new InternalError(`cannot remove network namespace file ${path}: ${errorMessage(err)}`);
  }
}

/** Network namespace files under run_root (for start-up reconciliation of orphans). */
export async function listNetns(runRoot: string): Promise<string[]> {
  try {
    return (await readdir(netnsDir(runRoot)))
      .filter((n) => SAFE_NAME.test(n))
      .map((n) => join(netnsDir(runRoot), n));
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return [];
    throw err;
  }
}
