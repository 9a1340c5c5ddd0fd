/**
 * The pod sandbox record (persisted, one JSON file per pod under
 * <root>/state/sandboxes) and the API the container lifecycle (src/container)
 * uses to find pods, join their namespaces and hook into stop/remove.
 */
import type { NameRegistry } from '../state/names.js';
import type { RuntimeHandler } from '../oci/types.js';
import type { HostPortMapping } from './network-types.js';
import type { SandboxUserns } from './userns.js';
import type { PinnedNamespaces } from './pinned.js';

/** How a namespace is held: by the pod's infra container, per container, or the host's. */
export type PodNamespaceMode = 'pod' | 'container' | 'node';

export interface SandboxNamespaces {
  network: 'pod' | 'node';
  /** 'pod': the infra holds a PID namespace all containers join (shareProcessNamespace). */
  pid: PodNamespaceMode;
  ipc: 'pod' | 'node';
}

/**
 * 'creating': RunPodSandbox is under way (the record lists what exists so far
 * so a crash can be undone at start-up); never shown to kubelet.
 */
export type SandboxPhase = 'creating' | 'ready' | 'notready';

export interface InfraContainer {
  /** The infra's runtime id (equal to the sandbox id). */
  id: string;
  /** Container pid when started; 0 before. */
  pid: number;
  bundleDir: string;
  /** Image reference or 'builtin' for berth's own pause rootfs. */
  image: string;
  /** ID of runtime.pause_image when the infra runs from it (RemoveImage refuses it meanwhile). */
  imageId?: string;
  rootfs: string;
}

export interface SandboxRecord {
  /** Schema version of this record. */
  version: 1;
  id: string;
  /** The reserved name: k8s_POD_<name>_<namespace>_<uid>_<attempt>. */
  name: string;
  metadata: { name: string; uid: string; namespace: string; attempt: number };
  labels: Record<string, string>;
  annotations: Record<string, string>;
  /** The CRI PodSandboxConfig as given (PodSandboxConfig.toJSON form). */
  config: unknown;
  phase: SandboxPhase;
  /** Nanoseconds since the epoch, as a decimal string (JSON has no bigint). */
  createdAtNs: string;
  /** Handler name (resolved: never empty). */
  runtimeHandler: string;
  /**
   * The handler as configured when the pod ran: stop and remove keep working
   * on it even if the config no longer names it.
   */
  handler: RuntimeHandler;
  namespaces: SandboxNamespaces;
  /** Persistent netns (bind mount); absent for host network. */
  netnsPath?: string;
  /** Pod IPs, primary first (all families). */
  ips: string[];
  /** CNI network used and its ADD result (for DEL's prevResult and verbose status). */
  network?: { name: string; result: unknown };
  portMappings: HostPortMapping[];
  /** <root>/sandboxes/<id>: bundle, pod files. */
  podDir: string;
  /** Log directory kubelet gave (containers log below it). */
  logDirectory: string;
  /** tmpfs mounted for the pod's /dev/shm, or /dev/shm with host IPC. */
  shmPath: string;
  /** Whether shmPath is a tmpfs berth mounted (and must unmount). */
  shmMounted: boolean;
  hostname: string;
  hostnamePath: string;
  resolvConfPath: string;
  hostsPath: string;
  /** Normalised cgroup parent (cgroupfs path or systemd slice), '' for none. */
  cgroupParent: string;
  /** Namespaced sysctls applied in the infra (validated). */
  sysctls: Record<string, string>;
  infra: InfraContainer;
  /**
   * Present when the pod runs without an infra process (runtime.drop_infra):
   * its IPC and UTS namespaces are these bind mounts, infra.pid stays 0.
   */
  pinned?: PinnedNamespaces;
  /** With `pinned`: the boot the pod was made in (its namespaces do not outlive it). */
  bootId?: string;
  /** The pod's own user namespace (userns_options mode POD); absent: the host's. */
  userns?: SandboxUserns;
  /** When it was stopped (ns since epoch, decimal string). */
  stoppedAtNs?: string;
}

/** Paths a container joins to share the pod's namespaces; absent: not shared via the pod. */
export interface SandboxNamespacePaths {
  network?: string;
  ipc?: string;
  uts?: string;
  /** Present only when the pod shares a PID namespace. */
  pid?: string;
  /** Present only when the pod has its own user namespace. */
  user?: string;
}

/** Called with the pod's lock held, before the infra is stopped / the pod removed. */
export type SandboxHook = (sandbox: SandboxRecord) => Promise<void>;

/** What src/container needs from the sandbox manager. */
export interface SandboxAccess {
  /** Pod by full id or unique prefix; NOT_FOUND when unknown ('creating' pods are unknown). */
  get(idOrPrefix: string): SandboxRecord;
  /** Like get, but undefined when unknown. */
  find(idOrPrefix: string): SandboxRecord | undefined;
  list(): SandboxRecord[];
  /** The pod's handler as currently configured. */
  handlerOf(sandbox: SandboxRecord): RuntimeHandler;
  /** /proc/<infra pid>/ns/* or the pinned bind mounts, for joining the pod's namespaces. */
  namespacePaths(sandbox: SandboxRecord): SandboxNamespacePaths;
  /** Runs fn holding the pod's lock (serialises with Stop/Remove of the pod). */
  withLock<T>(sandboxId: string, fn: () => Promise<T>): Promise<T>;
  /** Containers stop before the infra: StopPodSandbox and RemovePodSandbox call this first. */
  onStop(hook: SandboxHook): void;
  /** Containers are removed before the pod's files and record go. */
  onRemove(hook: SandboxHook): void;
  /** The name registry shared by pods and containers. */
  readonly names: NameRegistry;
}

/** The pod name CRI-O and containerd reserve: k8s_POD_<name>_<namespace>_<uid>_<attempt>. */
export function sandboxName(metadata: SandboxRecord['metadata']): string {
  return ['k8s', 'POD', metadata.name, metadata.namespace, metadata.uid, String(metadata.attempt)].join('_');
}
