/**
 * V8's compiled code for berth's modules, kept on disk between daemon starts
 * (node:module's compile cache): start-up, and the first pull (which loads
 * the registry client), spend less time compiling JavaScript, time in which
 * no gRPC call is answered.
 *
 * The cache is code the daemon will run, so it is used only from a
 * directory that nobody but the daemon's user can write to.
 */
import { lstatSync, mkdirSync } from 'node:fs';
import { enableCompileCache } from 'node:module';
import { dirname } from 'node:path';

export const DEFAULT_COMPILE_CACHE = '/var/cache/berth/compile';

function privateDir(path: string, uid: number): boolean {
  const info = lstatSync(path);
  return info.isDirectory() && info.uid === uid && (info.mode & 0o022) === 0;
}

/**
 * Turns the cache on in `dir` (created 0700 when missing); `BERTH_COMPILE_CACHE`
 * names another directory, or `off`. Returns the directory in use, or why none is.
 */
export function enableDaemonCompileCache(
  dir: string = process.env.BERTH_COMPILE_CACHE ?? DEFAULT_COMPILE_CACHE,
): { dir: string } | { off: string } {
  if (dir === 'off') return { off: 'BERTH_COMPILE_CACHE=off' };
  const uid = process.getuid?.() ?? -1;
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    // The directory and its parent: whoever can write the parent can swap the directory.
    if (!privateDir(dir, uid) || !privateDir(dirname(dir), uid)) {
      return { off: `${dir} or its parent is not the daemon user's alone` };
    }
    const result = enableCompileCache(dir);
    return result.directory ? { dir: result.directory } : { off: result.message ?? 'not enabled' };
  } catch (err) {
    return { off: err instanceof Error ? err.message : String(err) };
  }
}
