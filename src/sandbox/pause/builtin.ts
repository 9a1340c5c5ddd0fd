/**
 * berth's built-in pause: a minimal rootfs holding only the host's static
 * `catatonit` (Debian's package), run as `catatonit -P` (pause mode: sleeps,
 * reaps, exits on SIGINT/SIGTERM). Built once under <root>/pause, keyed by the
 * binary's digest so a package upgrade gets a fresh directory; no registry is
 * needed to run a pod.
 */
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { chmod, copyFile, mkdir, readdir, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { errnoCode, errorMessage, FailedPreconditionError } from '../../errors.js';
import { fsyncDir, fsyncFile } from '../../util/atomic-file.js';

export const CATATONIT = '/usr/bin/catatonit';
/** Where the binary sits inside the pause rootfs. */
export const PAUSE_BINARY = '/catatonit';
export const BUILTIN_PAUSE_ARGS = [PAUSE_BINARY, '-P'];

async function sha256File(path: string): Promise<string> {
  const hash = createHash('sha256');
  await pipeline(createReadStream(path), hash);
  return hash.digest('hex');
}

/**
 * Returns the built-in pause rootfs, building it first when missing. The
 * build happens in a temp dir renamed into place, so a crash leaves either
 * nothing or a complete rootfs; older builds are removed.
 */
export async function ensureBuiltinPause(
  root: string,
  binary = CATATONIT,
  inUse: ReadonlySet<string> = new Set(),
): Promise<string> {
  let digest: string;
  try {
    if (!(await stat(binary)).isFile()) throw new Error('not a regular file');
    digest = await sha256File(binary);
  } catch (err) {
    throw new FailedPreconditionError(
      `the built-in pause needs ${binary} (Debian package catatonit), or set runtime.pause_image: ${errorMessage(err)}`,
      { cause: err },
    );
  }
  const base = join(root, 'pause');
  const name = `catatonit-${digest.slice(0, 16)}`;
  const rootfs = join(base, name, 'rootfs');
  await mkdir(base, { recursive: true, mode: 0o711 });
  // Leftovers: temp dirs of an interrupted build, older builds no pod runs on.
  for (const entry of await readdir(base)) {
    if (entry === name || inUse.has(join(base, entry, 'rootfs'))) continue;
    await rm(join(base, entry), { recursive: true, force: true });
  }
  try {
    await stat(join(rootfs, PAUSE_BINARY));
    return rootfs;
  } catch (err) {
    if (errnoCode(err) !== 'ENOENT') throw err;
  }
  const temp = join(base, `.build-${randomBytes(6).toString('hex')}`);
  const tempRootfs = join(temp, 'rootfs');
  try {
    // Mount points the runtime needs; the rootfs is mounted read-only.
    for (const dir of ['proc', 'sys', 'dev', 'etc', 'tmp']) {
      await mkdir(join(tempRootfs, dir), { recursive: true, mode: 0o755 });
    }
    await copyFile(binary, join(tempRootfs, PAUSE_BINARY));
    await chmod(join(tempRootfs, PAUSE_BINARY), 0o755);
    // The rename below may reach the disk before the copied bytes: after a power loss
    // the rootfs would exist, so it would never be rebuilt, with an empty binary.
    await fsyncFile(join(tempRootfs, PAUSE_BINARY));
    await fsyncDir(tempRootfs);
    await rename(temp, join(base, name));
    await fsyncDir(base);
  } catch (err) {
    await rm(temp, { recursive: true, force: true });
    throw err;
  }
  return rootfs;
}
