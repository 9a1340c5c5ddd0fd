/** The OCI spec of a pod's infra (pause) container. */
import { NamespaceMode } from '../../generated/api.js';
import { InvalidArgumentError } from '../../errors.js';
import { containerCgroupsPath } from '../cgroup-driver.js';
import type { OciSpec } from '../types.js';
import { effectiveProfile, seccompFor } from '../seccomp/index.js';
import { DEFAULT_MASKED_PATHS, DEFAULT_PATH_ENV, DEFAULT_READONLY_PATHS, defaultMounts } from './defaults.js';
import { defaultDeviceRules } from './devices.js';
import { clampOomScoreAdj } from './host.js';
import { checkAbsolutePath } from './mounts.js';
import { sandboxResourceAnnotations } from './resources.js';
import { sandboxNamespaces } from './security.js';
import { checkUserMapped, ociMappings, podUserns } from '../userns/mappings.js';
import type { OciLinux, OciMount, SandboxSpecInput } from './types.js';

/** oom_score_adj of the infra: the pod should be the last to go (kubelet's own is -999). */
export const SANDBOX_OOM_SCORE_ADJ = -998;
/** The pause process needs no CPU weight of its own. */
const SANDBOX_CPU_SHARES = 2;

export const OCI_VERSION = '1.0.2';

/** Annotations runtimes (gVisor, Kata) read to group a pod's containers. */
export function criAnnotations(
  type: 'sandbox' | 'container',
  sandboxId: string,
  metadata: { name: string; namespace: string; uid: string } | undefined,
  extra: Record<string, string> = {},
): Record<string, string> {
  return {
    'io.kubernetes.cri.container-type': type,
    'io.kubernetes.cri.sandbox-id': sandboxId,
    ...(metadata
      ? {
          'io.kubernetes.cri.sandbox-name': metadata.name,
          'io.kubernetes.cri.sandbox-namespace': metadata.namespace,
          'io.kubernetes.cri.sandbox-uid': metadata.uid,
        }
      : {}),
    ...extra,
  };
}

/**
 * Spec of the infra container: read-only rootfs, the pause argv, the pod's
 * namespaces (netns file or host; IPC/UTS new or host; PID new unless NODE),
 * sysctls, cgroupsPath under the pod's parent, the clamped oom_score_adj, the
 * pod's /dev/shm, seccomp, no_new_privs, no capabilities (pause needs none,
 * even in a privileged pod), annotations (with the pod's resources and
 * overhead as containerd records them).
 */
export async function buildSandboxSpec(input: SandboxSpecInput): Promise<OciSpec> {
  const what = `pod sandbox ${input.id}`;
  const config = input.config;
  const security = config.linux?.securityContext;
  const nsOptions = security?.namespaceOptions;
  const privileged = security?.privileged ?? false;
  const hostNetwork = nsOptions?.network === NamespaceMode.NODE;
  const hostIpc = nsOptions?.ipc === NamespaceMode.NODE;
  if (input.args.length === 0) throw new InvalidArgumentError(`${what}: the pause process has no command`);
  const rootfs = checkAbsolutePath(input.rootfs, `${what}: rootfs`);

  const namespaces = sandboxNamespaces(nsOptions, input.netnsPath, what, input.usernsPath);
  const userns = podUserns(nsOptions, what);
  // In a privileged pod sysfs must be mounted read-write here: every sysfs mount
  // of one netns shares the first mount's superblock, read-only flag included,
  // so a read-only one in the infra would make /sys read-only for privileged containers.
  const mounts: OciMount[] = defaultMounts({ privileged, hostIpc });
  const shm = hostIpc ? '/dev/shm' : input.shmPath;
  if (!shm) throw new InvalidArgumentError(`${what}: no /dev/shm path for the pod`);
  mounts.push({
    destination: '/dev/shm',
    type: 'bind',
    source: checkAbsolutePath(shm, `${what}: shm path`),
    options: ['rbind', 'ro', 'nosuid', 'nodev', 'noexec'],
  });

  const runAsUser = security?.runAsUser?.value;
  const runAsGroup = security?.runAsGroup?.value;
  if (runAsGroup !== undefined && runAsUser === undefined) {
    throw new InvalidArgumentError(`${what}: run_as_group is set without run_as_user`);
  }
  const uid = runAsUser === undefined ? 0 : Number(runAsUser);
  const gid = runAsGroup === undefined ? 0 : Number(runAsGroup);
  for (const id of [uid, gid]) {
    if (!Number.isInteger(id) || id < 0 || id > 2 ** 31 - 1)
      throw new InvalidArgumentError(`${what}: user or group id ${id} is out of range`);
  }
  const additionalGids = [...new Set([gid, ...(security?.supplementalGroups ?? []).map(Number)])].sort(
    (a, b) => a - b,
  );
  if (userns) checkUserMapped({ uid, gid, additionalGids }, userns, what);

  const caps: string[] = [];
  const seccomp = await seccompFor(
    effectiveProfile(security?.seccomp, security?.seccompProfilePath ?? '', what),
    {
      privileged,
      seccompEnabled: input.host.seccompEnabled,
      capabilities: caps,
      profileRoot: input.seccompProfileRoot,
      what,
    },
  );

  const linux: OciLinux = {
    namespaces,
    cgroupsPath: containerCgroupsPath(input.cgroupParent, input.id, input.host.cgroupDriver),
    resources: {
      devices: defaultDeviceRules(),
      cpu: { shares: SANDBOX_CPU_SHARES },
    },
    ...(Object.keys(input.sysctls).length > 0 ? { sysctl: { ...input.sysctls } } : {}),
    ...(seccomp ? { seccomp } : {}),
    maskedPaths: [...DEFAULT_MASKED_PATHS],
    readonlyPaths: [...DEFAULT_READONLY_PATHS],
    ...(userns ? { uidMappings: ociMappings(userns.uids), gidMappings: ociMappings(userns.gids) } : {}),
  };

  return {
    ociVersion: OCI_VERSION,
    process: {
      terminal: false,
      user: { uid, gid, additionalGids },
      args: [...input.args],
      env: [DEFAULT_PATH_ENV, ...(input.env ?? [])],
      cwd: '/',
      capabilities: {
        bounding: [...caps],
        effective: [...caps],
        permitted: [...caps],
        inheritable: [],
        ambient: [],
      },
      noNewPrivileges: true,
      oomScoreAdj: clampOomScoreAdj(input.oomScoreAdj ?? SANDBOX_OOM_SCORE_ADJ, input.host.minOomScoreAdj),
    },
    root: { path: rootfs, readonly: true },
    // With the host's network the infra has the host's UTS namespace: no hostname of its own.
    ...(hostNetwork ? {} : { hostname: input.hostname }),
    mounts,
    annotations: {
      ...config.annotations,
      ...sandboxResourceAnnotations(config.linux?.resources, 'sandbox'),
      ...sandboxResourceAnnotations(config.linux?.overhead, 'sandbox-overhead'),
      ...criAnnotations('sandbox', input.id, config.metadata, {
        'io.kubernetes.cri.sandbox-log-directory': config.logDirectory,
      }),
      ...input.annotations,
    },
    linux,
  };
}
