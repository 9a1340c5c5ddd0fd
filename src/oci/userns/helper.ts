/**
 * berth's side of native/berth-idmap (built by scripts/build-native.mjs):
 * pinning a pod's user + network namespaces, ID-mapped read-only mounts of
 * image layers, and the probe whether a filesystem takes ID-mapped mounts.
 */
import { access, constants } from 'node:fs/promises';
import { nativeHelper } from '../../util/native.js';
import { run } from '../../util/run.js';
import { idMapArg, type PodUserns } from './mappings.js';

const HELPER_TIMEOUT_MS = 30_000;

export const IDMAP_HELPER = nativeHelper('berth-idmap');

export class IdmapHelperError extends Error {}

export async function helperPresent(path = IDMAP_HELPER): Promise<boolean> {
  try {
    await access(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

async function helper(args: string[], what: string): Promise<void> {
  const result = await run(IDMAP_HELPER, args, { timeoutMs: HELPER_TIMEOUT_MS }).catch((err: unknown) => {
    throw new IdmapHelperError(`${what}: cannot run ${IDMAP_HELPER}: ${(err as Error).message}`);
  });
  if (result.code !== 0) {
    const why = result.stderr.trim() || `exit ${result.code ?? result.signal}`;
    throw new IdmapHelperError(`${what}: ${why}`);
  }
}

/**
 * Makes the pod's user namespace (and a network namespace it owns) and
 * bind-mounts them onto the existing files `usernsFile` and `netnsFile`.
 */
export function pinUserns(userns: PodUserns, usernsFile: string, netnsFile?: string): Promise<void> {
  const args = ['pin', idMapArg(userns.uids), idMapArg(userns.gids), usernsFile];
  if (netnsFile) args.push(netnsFile);
  return helper(args, 'creating the pod user namespace');
}

/** Read-only clones of each source, ID-mapped through `usernsFile`, attached at their targets. All or nothing. */
export async function idmapMount(usernsFile: string, pairs: readonly [string, string][]): Promise<void> {
  if (pairs.length === 0) return;
  await helper(['mount', usernsFile, ...pairs.flat()], 'ID-mapped mount of the image layers');
}

/** Why `dir`'s filesystem refuses ID-mapped mounts; undefined when it takes them. */
export async function probeIdmap(dir: string): Promise<string | undefined> {
  try {
    await helper(['probe', dir], `ID-mapped mount probe on ${dir}`);
    return undefined;
  } catch (err) {
    return (err as Error).message;
  }
}
