/**
 * Inputs and outputs of OCI spec generation (src/oci/spec): what the sandbox
 * and container managers hand in, and the typed parts of config.json berth
 * writes.
 */
import type { ContainerConfig, PodSandboxConfig } from '../../generated/api.js';
import type { ImageConfigFile } from '../../image/types.js';
import type { CgroupDriver } from '../cgroup-driver.js';
import type { RuntimeHandler } from '../types.js';

/** One entry of config.json `mounts`. */
export type OciMount = { destination: string; type?: string; source?: string; options?: string[] };

/** config.json `linux.namespaces[]`: a new namespace, or the one at `path` joined. */
export type OciNamespace = {
  type: 'pid' | 'network' | 'ipc' | 'uts' | 'mount' | 'user' | 'cgroup';
  path?: string;
};

export type OciDevice = {
  type: 'c' | 'b' | 'p' | 'u';
  path: string;
  major: number;
  minor: number;
  fileMode?: number;
  uid?: number;
  gid?: number;
};

export type OciDeviceRule = {
  allow: boolean;
  type?: 'a' | 'c' | 'b';
  major?: number;
  minor?: number;
  access?: string;
};

/** config.json `linux.resources` (the parts berth sets). */
export type OciResources = {
  devices?: OciDeviceRule[];
  memory?: { limit?: number; swap?: number; reservation?: number };
  cpu?: { shares?: number; quota?: number; period?: number; cpus?: string; mems?: string };
  pids?: { limit: number };
  hugepageLimits?: { pageSize: string; limit: number }[];
  unified?: Record<string, string>;
};

export type OciSeccompArg = { index: number; value: number; valueTwo?: number; op: string };
export type OciSeccompSyscall = {
  names: string[];
  action: string;
  errnoRet?: number;
  args?: OciSeccompArg[];
};
/** config.json `linux.seccomp`. */
export type OciSeccomp = {
  defaultAction: string;
  defaultErrnoRet?: number;
  architectures?: string[];
  flags?: string[];
  listenerPath?: string;
  syscalls?: OciSeccompSyscall[];
};

export type OciLinux = {
  namespaces: OciNamespace[];
  cgroupsPath?: string;
  resources?: OciResources;
  sysctl?: Record<string, string>;
  seccomp?: OciSeccomp;
  devices?: OciDevice[];
  maskedPaths?: string[];
  readonlyPaths?: string[];
  rootfsPropagation?: string;
  /** With a user namespace: container → host ID ranges (runc wants them even when joining one). */
  uidMappings?: OciIdMapping[];
  gidMappings?: OciIdMapping[];
};

export type OciIdMapping = { containerID: number; hostID: number; size: number };

/**
 * Facts about this host berth needs to write specs, detected once at start-up
 * by detectSpecHost() (src/oci/spec/host.ts) and passed to every build call.
 */
export interface SpecHost {
  cgroupDriver: CgroupDriver;
  /** 2 only on a pure unified hierarchy; hybrid (v1 + unified for systemd) is 1. */
  cgroupVersion: 1 | 2;
  /** Capabilities in berth's bounding set: the most a container can get. */
  boundingCapabilities: string[];
  /** The kernel has seccomp filtering (Seccomp: line in /proc/self/status). */
  seccompEnabled: boolean;
  /** AppArmor is enabled (/sys/module/apparmor/parameters/enabled = Y). */
  appArmorEnabled: boolean;
  /**
   * Lowest oom_score_adj berth may give a process (restrict_oom_score_adj):
   * berth's own when it cannot lower scores (no CAP_SYS_RESOURCE), else -1000.
   */
  minOomScoreAdj: number;
  /** The memory controller accounts swap (v1 memory.memsw.*; always on v2). */
  swapAccounting: boolean;
  /** The hugetlb controller is there (limits are dropped otherwise, as containerd tolerates). */
  hugetlb: boolean;
}

/** What an OCI runtime binary supports, from `<runtime> features` (cached per binary). */
export interface RuntimeFeatures {
  /** Mount options the runtime understands (e.g. "rro" for recursive read-only). */
  mountOptions: string[];
  /** Whether the runtime's features command answered at all. */
  known: boolean;
}

/** Input of buildSandboxSpec: the infra (pause) container of a pod. */
export interface SandboxSpecInput {
  /** Sandbox id (also the infra container id). */
  id: string;
  /** The pod config as kubelet sent it (security context, overhead, resources, annotations). */
  config: PodSandboxConfig;
  /** Root filesystem of the pause process; mounted read-only. */
  rootfs: string;
  /** argv of the pause process. */
  args: string[];
  /** Extra environment (PATH is always set). */
  env?: string[];
  /** Hostname of the pod (ignored with the host's network, where UTS is the host's). */
  hostname: string;
  /** Pod netns (bind-mounted nsfs) to join; absent with the host network. */
  netnsPath?: string;
  /** /dev/shm of the pod (a tmpfs berth mounted), bind-mounted into the infra; absent with host IPC. */
  shmPath?: string;
  /**
   * The pod's user namespace (a pinned nsfs file) when the pod asks for one
   * (userns_options mode POD); the netns at netnsPath is owned by it.
   */
  usernsPath?: string;
  /** Namespaced sysctls, already validated by the caller (applied in the infra). */
  sysctls: Record<string, string>;
  /** Normalised cgroup parent ('' for none); cgroupfs path or systemd slice per host.cgroupDriver. */
  cgroupParent: string;
  /** Wanted oom_score_adj of the pause process (CRI-O uses -998); clamped to host.minOomScoreAdj. */
  oomScoreAdj?: number;
  /** Directory of Localhost seccomp profiles given as relative refs ('' = absolute paths only). */
  seccompProfileRoot?: string;
  /** Extra annotations merged over the pod's (e.g. io.kubernetes.cri.* keys). */
  annotations?: Record<string, string>;
  host: SpecHost;
}

/** The resolved identity of a container's process. */
export interface ProcessUser {
  uid: number;
  gid: number;
  /** Supplementary groups: the primary gid and the others (sorted, unique). */
  additionalGids: number[];
  /** Home directory from /etc/passwd (HOME is set from it when the env lacks one). */
  home: string;
}

/** Facts about the pod a container joins. */
export interface SandboxFacts {
  id: string;
  /** The pod config as kubelet sent it (namespace options, security context, hostname). */
  config: PodSandboxConfig;
  /**
   * Namespace paths to join (from SandboxAccess.namespacePaths): network (netns
   * file), ipc, uts, and pid when the pod shares one. Absent: the host's
   * (network/ipc per NamespaceOption NODE) or none (pid).
   */
  namespacePaths: { network?: string; ipc?: string; uts?: string; pid?: string; user?: string };
  /** Pod files bind-mounted into each container ('' = not mounted). */
  hostsPath: string;
  resolvConfPath: string;
  hostnamePath: string;
  /** /dev/shm source: the pod's tmpfs, or /dev/shm with host IPC. */
  shmPath: string;
  /** Normalised cgroup parent of the pod ('' for none). */
  cgroupParent: string;
  /** Pod hostname (goes into the spec too so runc does not complain with a new UTS). */
  hostname: string;
}

/** Input of buildContainerSpec. */
export interface ContainerSpecInput {
  id: string;
  config: ContainerConfig;
  sandbox: SandboxFacts;
  /** The image's config file (entrypoint, cmd, env, user, workdir, stop signal). */
  image: ImageConfigFile;
  /** Mounted root filesystem of the container; users are looked up in its /etc. */
  rootfs: string;
  /** Handler the container runs on (its runtime decides e.g. recursive read-only support). */
  handler: RuntimeHandler;
  /** For NamespaceOption.pid = TARGET: /proc/<pid>/ns/pid of the target container. */
  targetPidNamespace?: string;
  /** Directory of Localhost seccomp profiles given as relative refs ('' = absolute paths only). */
  seccompProfileRoot?: string;
  /** Extra annotations (io.kubernetes.cri.* keys) merged over the container's. */
  annotations?: Record<string, string>;
  /** Directories of CDI spec files (runtime.cdi_spec_dirs); absent: /etc/cdi, /var/run/cdi. */
  cdiSpecDirs?: readonly string[];
  host: SpecHost;
}

/** Output of buildContainerSpec. */
export interface ContainerSpecResult {
  spec: import('../types.js').OciSpec;
  user: ProcessUser;
  /** Stop signal name (SIGTERM when neither config nor image names one). */
  stopSignal: string;
  /** The bind mounts from ContainerConfig.mounts, validated, as they went into the spec. */
  mounts: OciMount[];
}
