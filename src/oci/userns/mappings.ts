/**
 * CRI user namespaces (NamespaceOption.userns_options), validated: mode NODE
 * is the host's user namespace; mode POD is one pod user namespace whose uid
 * and gid mappings each hold exactly one range starting at container ID 0.
 * CONTAINER and TARGET are refused, as are a POD user namespace beside any
 * of the host's namespaces (the host's netns, IPC or PID belong to the
 * host's user namespace; Kubernetes forbids the mix as well).
 */
import { NamespaceMode, type IDMapping, type NamespaceOption } from '../../generated/api.js';
import { InvalidArgumentError } from '../../errors.js';

/** Largest ID + 1 a mapping may reach (uid_t is 32 bits; (uid_t)-1 is never valid). */
const ID_LIMIT = 0xffff_ffff;

/** One ID range: container IDs containerId..containerId+length-1 are host IDs hostId... */
export interface IdRange {
  containerId: number;
  hostId: number;
  length: number;
}

/** A pod user namespace: its uid and gid mappings (one range each). */
export interface PodUserns {
  uids: IdRange[];
  gids: IdRange[];
}

function modeName(mode: NamespaceMode): string {
  return NamespaceMode[mode] ?? String(mode);
}

function checkRanges(given: readonly IDMapping[], kind: 'uid' | 'gid', what: string): IdRange[] {
  if (given.length === 0) {
    throw new InvalidArgumentError(
      `${what}: user namespace mode POD needs a ${kind} mapping, but none was given`,
    );
  }
  if (given.length > 1) {
    throw new InvalidArgumentError(
      `${what}: user namespace mode POD takes exactly one ${kind} mapping, but ${given.length} were given`,
    );
  }
  const { containerId, hostId, length } = given[0];
  for (const [name, value] of [
    ['container ID', containerId],
    ['host ID', hostId],
    ['length', length],
  ] as const) {
    if (!Number.isInteger(value) || value < 0 || value >= ID_LIMIT) {
      throw new InvalidArgumentError(`${what}: ${kind} mapping ${name} ${value} is out of range`);
    }
  }
  if (containerId !== 0) {
    throw new InvalidArgumentError(
      `${what}: the ${kind} mapping must map container ID 0 (root), but it starts at container ID ${containerId}`,
    );
  }
  if (length === 0) throw new InvalidArgumentError(`${what}: the ${kind} mapping has length 0`);
  if (hostId + length > ID_LIMIT) {
    throw new InvalidArgumentError(
      `${what}: ${kind} mapping of host IDs ${hostId}+${length} runs past the largest ID ${ID_LIMIT - 1}`,
    );
  }
  return [{ containerId, hostId, length }];
}

/**
 * The pod user namespace a pod asks for, validated; undefined for the host's
 * (mode NODE or no user namespace options).
 */
export function podUserns(options: NamespaceOption | undefined, what: string): PodUserns | undefined {
  const userns = options?.usernsOptions;
  if (!userns) return undefined;
  switch (userns.mode) {
    case NamespaceMode.NODE:
      if (userns.uids.length > 0 || userns.gids.length > 0) {
        throw new InvalidArgumentError(
          `${what}: user namespace mode NODE (the host's) takes no ID mappings, but some were given`,
        );
      }
      return undefined;
    case NamespaceMode.POD:
      break;
    default:
      throw new InvalidArgumentError(
        `${what}: user namespace mode ${modeName(userns.mode)} is not supported; use POD (a pod user namespace with ID mappings) or NODE (the host's)`,
      );
  }
  const uids = checkRanges(userns.uids, 'uid', what);
  const gids = checkRanges(userns.gids, 'gid', what);
  for (const [name, mode] of [
    ['network', options?.network],
    ['IPC', options?.ipc],
    ['PID', options?.pid],
  ] as const) {
    if (mode === NamespaceMode.NODE) {
      throw new InvalidArgumentError(
        `${what}: a pod user namespace cannot be combined with the host's ${name} namespace`,
      );
    }
  }
  return { uids, gids };
}

function sameRanges(a: readonly IdRange[], b: readonly IdRange[]): boolean {
  return (
    a.length === b.length &&
    a.every(
      (r, i) => r.containerId === b[i].containerId && r.hostId === b[i].hostId && r.length === b[i].length,
    )
  );
}

/**
 * The user namespace of a container: always its pod's. A container that names
 * one must name the pod's (kubelet copies the pod's options into each
 * container); CONTAINER and TARGET are refused.
 */
export function containerUserns(
  options: NamespaceOption | undefined,
  pod: PodUserns | undefined,
  what: string,
): PodUserns | undefined {
  const userns = options?.usernsOptions;
  if (!userns) return pod;
  if (userns.mode === NamespaceMode.NODE) {
    if (pod) {
      throw new InvalidArgumentError(
        `${what}: asks for the host's user namespace, but its pod sandbox has a pod user namespace`,
      );
    }
    return undefined;
  }
  if (userns.mode !== NamespaceMode.POD) {
    throw new InvalidArgumentError(
      `${what}: user namespace mode ${modeName(userns.mode)} is not supported; containers share their pod's (POD) or the host's (NODE)`,
    );
  }
  if (!pod) {
    throw new InvalidArgumentError(
      `${what}: asks for a pod user namespace, but its pod sandbox runs in the host's user namespace`,
    );
  }
  const own = podUserns({ ...options, usernsOptions: userns }, what)!;
  if (!sameRanges(own.uids, pod.uids) || !sameRanges(own.gids, pod.gids)) {
    throw new InvalidArgumentError(
      `${what}: its user namespace ID mappings differ from its pod sandbox's (${describeRanges(pod.uids)})`,
    );
  }
  return pod;
}

/** "0 1000 100000" per range, ',' between ranges (berth-idmap's and /proc's uid_map form). */
export function idMapArg(ranges: readonly IdRange[]): string {
  return ranges.map((r) => `${r.containerId} ${r.hostId} ${r.length}`).join(',');
}

export function describeRanges(ranges: readonly IdRange[]): string {
  return ranges.map((r) => `container ${r.containerId}+${r.length} -> host ${r.hostId}`).join(', ');
}

/** config.json linux.uidMappings / gidMappings. */
export function ociMappings(
  ranges: readonly IdRange[],
): { containerID: number; hostID: number; size: number }[] {
  return ranges.map((r) => ({ containerID: r.containerId, hostID: r.hostId, size: r.length }));
}

/** The host ID a container ID maps to; undefined when unmapped. */
export function hostIdOf(ranges: readonly IdRange[], containerId: number): number | undefined {
  const range = ranges.find((r) => containerId >= r.containerId && containerId < r.containerId + r.length);
  return range && range.hostId + (containerId - range.containerId);
}

/** The process's uid, gid and groups must be mapped, or the runtime fails obscurely at setuid. */
export function checkUserMapped(
  user: { uid: number; gid: number; additionalGids: readonly number[] },
  userns: PodUserns,
  what: string,
): void {
  if (hostIdOf(userns.uids, user.uid) === undefined) {
    throw new InvalidArgumentError(
      `${what}: user ${user.uid} is not mapped in the pod's user namespace (uids ${describeRanges(userns.uids)})`,
    );
  }
  for (const gid of [user.gid, ...user.additionalGids]) {
    if (hostIdOf(userns.gids, gid) === undefined) {
      throw new InvalidArgumentError(
        `${what}: group ${gid} is not mapped in the pod's user namespace (gids ${describeRanges(userns.gids)})`,
      );
    }
  }
}
