/**
 * Whether berth can honestly run pods in their own user namespace here: the
 * ID-mapping helper is built, the filesystem of berth's root takes ID-mapped
 * mounts, an overlay over an ID-mapped layer shows the layer's root-owned
 * files as the pod's root (checked end to end once, in a scratch dir), and
 * the runtime can reach the root filesystems from inside the namespace (every
 * directory above berth's root must be searchable by other users). Only runc
 * handlers qualify: runsc and crun were not shown to work.
 */
import { chown, mkdir, mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { runtimeKind } from '../runtime-kind.js';
import { errnoCode, errorMessage } from '../../errors.js';
import { mountsUnder, unmountAll } from '../../sandbox/mounts.js';
import { run } from '../../util/run.js';
import type { RuntimeHandler } from '../types.js';
import { IDMAP_HELPER, helperPresent, idmapMount, pinUserns, probeIdmap } from './helper.js';

export interface UsernsSupport {
  ok: boolean;
  /** Why not (empty when ok). */
  reason: string;
}

const SCRATCH_PREFIX = '.userns-check-';
/** The self-test's pod root: an ID no real pod is likely to use, far from the usual ranges. */
const CHECK_HOST_ID = 3_000_000_000;

const cache = new Map<string, Promise<UsernsSupport>>();

/** Handlers whose runtime was shown to run berth's user-namespaced pods (runc 1.1+). */
export function handlerSupportsUserns(handler: RuntimeHandler): boolean {
  return handler.type === 'oci' && runtimeKind(handler) === 'runc';
}

/** The (cached) support check for berth's root directory. */
export function usernsSupport(root: string): Promise<UsernsSupport> {
  let found = cache.get(root);
  if (!found) {
    found = checkSupport(root).catch((err: unknown) => ({
      ok: false,
      reason: `user namespace self-test failed: ${errorMessage(err)}`,
    }));
    cache.set(root, found);
  }
  return found;
}

/**
 * Waits for the self-tests already started: each removes its scratch mounts
 * when it ends, and a daemon stopping mid-test must not leave them behind.
 */
export async function settleUsernsChecks(): Promise<void> {
  await Promise.all(cache.values());
}

async function searchableAncestors(root: string): Promise<string | undefined> {
  for (let dir = root; ; dir = dirname(dir)) {
    const mode = (await stat(dir)).mode;
    if ((mode & 0o001) === 0) {
      return `${dir} is not searchable by other users (mode ${(mode & 0o777).toString(8)}): the runtime cannot reach root filesystems from a pod user namespace`;
    }
    if (dir === dirname(dir)) return undefined;
  }
}

/** Scratch dirs a crash left behind (unmounted first, so nothing is deleted through a mount). */
async function removeLeftovers(root: string): Promise<void> {
  let entries: string[] = [];
  try {
    entries = await readdir(root);
  } catch (err) {
    if (errnoCode(err) !== 'ENOENT') throw err;
  }
  for (const name of entries.filter((n) => n.startsWith(SCRATCH_PREFIX))) {
    await removeScratch(join(root, name));
  }
}

async function removeScratch(dir: string): Promise<void> {
  await unmountAll(dir);
  if ((await mountsUnder(dir)).length > 0) throw new Error(`${dir} is still mounted`);
  await rm(dir, { recursive: true, force: true });
}

async function checkSupport(root: string): Promise<UsernsSupport> {
  if (!(await helperPresent())) {
    return {
      ok: false,
      reason: `${IDMAP_HELPER} is not built (gcc missing at build time?): no ID-mapped root filesystems`,
    };
  }
  await mkdir(root, { recursive: true, mode: 0o711 });
  const unsearchable = await searchableAncestors(root);
  if (unsearchable) return { ok: false, reason: unsearchable };
  const probe = await probeIdmap(root);
  if (probe) return { ok: false, reason: probe };
  await removeLeftovers(root);
  const dir = await mkdtemp(join(root, SCRATCH_PREFIX));
  try {
    return await selfTest(dir);
  } finally {
    await removeScratch(dir);
  }
}

/**
 * End to end, as a pod's container gets it: a pinned user namespace, a layer
 * with a root-owned file ID-mapped through it, an overlay on top. Seen from
 * the host, the file must belong to the pod's root.
 */
async function selfTest(dir: string): Promise<UsernsSupport> {
  const layer = join(dir, 'layer');
  const mapped = join(dir, 'mapped');
  const upper = join(dir, 'upper');
  const work = join(dir, 'work');
  const merged = join(dir, 'merged');
  const userns = join(dir, 'userns');
  await Promise.all([layer, mapped, upper, work, merged].map((d) => mkdir(d, { mode: 0o700 })));
  await writeFile(join(layer, 'owned-by-root'), '');
  await chown(join(layer, 'owned-by-root'), 0, 0);
  await chown(upper, CHECK_HOST_ID, CHECK_HOST_ID);
  await writeFile(userns, '', { mode: 0o444 });
  const range = [{ containerId: 0, hostId: CHECK_HOST_ID, length: 65536 }];
  await pinUserns({ uids: range, gids: range }, userns);
  await idmapMount(userns, [[layer, mapped]]);
  const overlay = await run('mount', [
    '-t',
    'overlay',
    'overlay',
    '-o',
    `lowerdir=${mapped},upperdir=${upper},workdir=${work}`,
    merged,
  ]);
  if (overlay.code !== 0) {
    return { ok: false, reason: `overlay over an ID-mapped layer: ${overlay.stderr.trim()}` };
  }
  const seen = await stat(join(merged, 'owned-by-root'));
  if (seen.uid !== CHECK_HOST_ID || seen.gid !== CHECK_HOST_ID) {
    return {
      ok: false,
      reason: `an ID-mapped layer's root-owned file showed as ${seen.uid}:${seen.gid}, not the pod's root ${CHECK_HOST_ID}`,
    };
  }
  return { ok: true, reason: '' };
}
