/**
 * A pod's own user namespace (userns_options mode POD). berth makes it before
 * the infra, pinned at <podDir>/userns, together with the pod's network
 * namespace, which it owns: runc joins the user namespace first and could not
 * enter a netns of the host's user namespace afterwards. CNI works on that
 * netns as usual. The infra's root filesystem is an overlay of the pause
 * layers ID-mapped into the pod, so the runtime can reach it from inside and
 * its root-owned files belong to the pod's root.
 *
 * Everything lives in the pod dir or the netns file, so the sandbox manager's
 * undo, remove and start-up clean-up (unmountAll of the pod dir, netns
 * removal) take it all away.
 */
import { chown, mkdir, open, rmdir } from 'node:fs/promises';
import { join } from 'node:path';
import { FailedPreconditionError, errnoCode } from '../errors.js';
import type { Logger } from '../log.js';
import { idmapMount, pinUserns } from '../oci/userns/helper.js';
import { hostIdOf, type PodUserns } from '../oci/userns/mappings.js';
import { handlerSupportsUserns, usernsSupport } from '../oci/userns/support.js';
import type { RuntimeHandler } from '../oci/types.js';
import { mountOverlay, unmountAll } from './mounts.js';
import { netnsDir, netnsPath, removeNetns } from './network/netns.js';

/** What a pod record keeps of its user namespace. */
export interface SandboxUserns extends PodUserns {
  /** The pinned user namespace (nsfs bind mount) containers join and layers are ID-mapped through. */
  path: string;
}

/** FAILED_PRECONDITION unless this handler on this host can run the pod honestly. */
export async function requireUsernsSupport(
  root: string,
  handler: RuntimeHandler,
  what: string,
): Promise<void> {
  if (!handlerSupportsUserns(handler)) {
    throw new FailedPreconditionError(
      `${what}: runtime handler ${JSON.stringify(handler.name)} (${handler.path}) does not support pod user namespaces; runc handlers do`,
    );
  }
  const support = await usernsSupport(root);
  if (!support.ok) {
    throw new FailedPreconditionError(`${what}: pod user namespaces are unavailable: ${support.reason}`);
  }
}

async function createEmpty(path: string): Promise<void> {
  await (await open(path, 'wx', 0o444)).close();
}

/**
 * Pins the pod's user namespace at <podDir>/userns and, unless the pod uses
 * the host's network, a netns it owns at the usual netns path (returned).
 * All or nothing.
 */
export async function pinPodNamespaces(
  runRoot: string,
  podDir: string,
  podId: string,
  userns: SandboxUserns,
  withNetwork: boolean,
): Promise<string | undefined> {
  const netns = withNetwork ? netnsPath(runRoot, podId) : undefined;
  await createEmpty(userns.path);
  try {
    if (netns) {
      await mkdir(netnsDir(runRoot), { recursive: true, mode: 0o711 });
      await createEmpty(netns);
    }
    await pinUserns(userns, userns.path, netns);
    return netns;
  } catch (err) {
    if (netns) await removeNetns(netns).catch(() => undefined);
    await unmountAll(userns.path).catch(() => undefined);
    throw err;
  }
}

/**
 * The infra's root filesystem: an overlay of the pause layers, each ID-mapped
 * in a scratch dir (detached once the overlay holds them), with an upper dir
 * of the pod's root for the mount points the runtime creates. The spec keeps
 * the root read-only. Returns the rootfs path.
 */
export async function mountInfraRootfs(
  podDir: string,
  lowerDirs: string[],
  userns: SandboxUserns,
): Promise<string> {
  const rootfs = join(podDir, 'rootfs');
  const upper = join(podDir, 'rootfs-upper');
  const work = join(podDir, 'rootfs-work');
  const scratch = join(podDir, 'idmap');
  await Promise.all([
    mkdir(rootfs),
    mkdir(upper, { mode: 0o755 }),
    mkdir(work),
    mkdir(scratch, { mode: 0o700 }),
  ]);
  await chown(upper, hostIdOf(userns.uids, 0)!, hostIdOf(userns.gids, 0)!);
  const mapped = lowerDirs.map((_, i) => join(scratch, String(i)));
  try {
    await Promise.all(mapped.map((dir) => mkdir(dir, { mode: 0o700 })));
    await idmapMount(
      userns.path,
      lowerDirs.map((dir, i) => [dir, mapped[i]]),
    );
    await mountOverlay(mapped, upper, work, rootfs);
  } finally {
    // The overlay keeps its own references to the layers: the scratch mounts can go.
    await unmountAll(scratch);
    for (const dir of mapped) await rmdir(dir).catch((err: unknown) => ignoreMissing(err));
    await rmdir(scratch).catch((err: unknown) => ignoreMissing(err));
  }
  return rootfs;
}

function ignoreMissing(err: unknown): void {
  if (errnoCode(err) !== 'ENOENT') throw err;
}

/** Runs the support self-test early (Status and the first pod then find it done) and says what it found. */
export function checkUsernsSupportAtStart(root: string, log: Logger): void {
  void usernsSupport(root).then((support) => {
    if (support.ok) log.info('pod user namespaces available (ID-mapped image layers work here)');
    else log.warn({ reason: support.reason }, 'pod user namespaces unavailable');
  });
}
