/**
 * Pods without an infra process (runtime.drop_infra, off by default; what
 * CRI-O calls drop_infra_ctr). A pause process only holds namespaces;
 * unless the pod shares a PID namespace (the pause is its PID 1) berth can
 * hold them itself: the netns is a bind mount already, and the IPC and UTS
 * namespaces (the latter with the pod's hostname) are bind-mounted onto files
 * in <podDir>/ns. That saves a conmon and a runtime create per pod, the
 * slowest step of RunPodSandbox, and a process per pod.
 *
 * Everything lives in the pod dir, so the sandbox manager's undo, remove and
 * start-up clean-up (unmountAll of the pod dir) take it away.
 */
import { mkdir, open } from 'node:fs/promises';
import { join } from 'node:path';
import type { BerthConfig } from '../config/schema.js';
import { errnoCode, errorMessage } from '../errors.js';
import { runtimeKind } from '../oci/runtime-kind.js';
import type { RuntimeHandler } from '../oci/types.js';
import { newPinnedNamespaces } from '../util/mount.js';
import { unmountAll } from './mounts.js';
import { isNetns } from './network/netns.js';
import type { SandboxNamespaces } from './types.js';

/** Files the pod's own IPC and UTS namespaces are bind-mounted onto; absent: not the pod's. */
export interface PinnedNamespaces {
  ipc?: string;
  uts?: string;
}

/**
 * Why this pod needs an infra process, or undefined when it can do without.
 * Only runc and crun: runsc and VM runtimes build the pod's sandbox from it.
 */
export function infraNeededBecause(
  config: BerthConfig,
  handler: RuntimeHandler,
  pod: { namespaces: SandboxNamespaces; userns: boolean; sysctls: Record<string, string> },
): string | undefined {
  if (!config.runtime.drop_infra) return 'runtime.drop_infra is off';
  const kind = runtimeKind(handler);
  if (handler.type !== 'oci' || (kind !== 'runc' && kind !== 'crun'))
    return `runtime handler ${JSON.stringify(handler.name)} is not runc or crun`;
  if (pod.namespaces.pid === 'pod') return 'the pod shares a PID namespace (the pause is its PID 1)';
  if (pod.userns) return 'the pod has its own user namespace';
  // The runtime writes them inside the namespaces, after CNI made the interfaces they may name.
  if (Object.keys(pod.sysctls).length > 0) return 'the pod sets sysctls';
  return undefined;
}

export function pinnedPaths(podDir: string, namespaces: SandboxNamespaces): PinnedNamespaces {
  const dir = join(podDir, 'ns');
  return {
    ...(namespaces.ipc === 'pod' ? { ipc: join(dir, 'ipc') } : {}),
    // With the host's network a pod has the host's UTS namespace, as with an infra.
    ...(namespaces.network === 'pod' ? { uts: join(dir, 'uts') } : {}),
  };
}

/** Makes and pins the namespaces `pinned` names; all or nothing. */
export async function pinNamespaces(
  podDir: string,
  pinned: PinnedNamespaces,
  hostname: string,
): Promise<void> {
  if (!pinned.ipc && !pinned.uts) return;
  await mkdir(join(podDir, 'ns'), { mode: 0o700 });
  try {
    for (const file of [pinned.ipc, pinned.uts]) if (file) await (await open(file, 'wx', 0o444)).close();
    await newPinnedNamespaces(pinned, hostname);
  } catch (err) {
    await unpinNamespaces(podDir).catch(() => undefined);
    // A plain Error: RunPodSandbox wraps it with the pod's name and handler.
    throw new Error(
      `pinning the pod's namespaces in ${podDir}: ${errorMessage(err)} (with runtime.drop_infra = false every pod gets an infra container instead)`,
      { cause: err },
    );
  }
}

/** Releases the pinned namespaces (processes still in them keep them). Idempotent. */
export async function unpinNamespaces(podDir: string): Promise<void> {
  await unmountAll(join(podDir, 'ns'));
}

/** True while every pinned namespace is still mounted (false after a reboot or a stop). */
export async function pinnedAlive(pinned: PinnedNamespaces): Promise<boolean> {
  for (const file of [pinned.ipc, pinned.uts]) {
    if (!file) continue;
    try {
      if (!(await isNetns(file))) return false;
    } catch (err) {
      if (errnoCode(err) === 'EACCES') return false;
      throw err;
    }
  }
  return true;
}
