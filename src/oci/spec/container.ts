/** The OCI spec of a workload container. */
import { chown, mkdir } from 'node:fs/promises';
import { relative } from 'node:path';
import { NamespaceMode } from '../../generated/api.js';
import { InvalidArgumentError, errorMessage } from '../../errors.js';
import { secureJoin } from '../../util/safe-path.js';
import { containerCgroupsPath } from '../cgroup-driver.js';
import { effectiveProfile, seccompFor } from '../seccomp/index.js';
import { containerCapabilities } from './capabilities.js';
import { DEFAULT_MASKED_PATHS, DEFAULT_READONLY_PATHS, defaultMounts } from './defaults.js';
import { criDevices, defaultDeviceRules, hostDevices } from './devices.js';
import { clampOomScoreAdj, supportsRecursiveReadOnly } from './host.js';
import { checkAbsolutePath, criBindMounts, mergeMounts } from './mounts.js';
import { containerEnv, mergeEnv, processArgs, stopSignalOf, workingDir } from './process.js';
import { DEFAULT_CDI_SPEC_DIRS, cdiDeviceNames, cdiEditsFor } from './cdi.js';
import { linuxResources } from './resources.js';
import { OCI_VERSION } from './sandbox.js';
import { apparmorFor, containerNamespaces } from './security.js';
import { resolveUser } from './user.js';
import { checkUserMapped, containerUserns, hostIdOf, ociMappings, podUserns } from '../userns/mappings.js';
import type { ContainerSpecInput, ContainerSpecResult, OciLinux, OciMount } from './types.js';

/** Paths the config's lists replace; an empty list means "the defaults" (proto3 cannot tell absent from empty). */
function pathList(given: readonly string[] | undefined, defaults: readonly string[], what: string): string[] {
  if (!given || given.length === 0) return [...defaults];
  return given.map((p) => checkAbsolutePath(p, what));
}

/** Bind mounts of the pod's files (hosts, resolv.conf, hostname) and /dev/shm. */
function podFileMounts(input: ContainerSpecInput, readonlyRootfs: boolean, what: string): OciMount[] {
  const mounts: OciMount[] = [];
  const file = (destination: string, source: string) => {
    if (!source) return;
    mounts.push({
      destination,
      type: 'bind',
      source: checkAbsolutePath(source, `${what}: pod file for ${destination}`),
      options: ['rbind', 'rprivate', readonlyRootfs ? 'ro' : 'rw'],
    });
  };
  file('/etc/hostname', input.sandbox.hostnamePath);
  file('/etc/hosts', input.sandbox.hostsPath);
  file('/etc/resolv.conf', input.sandbox.resolvConfPath);
  if (input.sandbox.shmPath) {
    mounts.push({
      destination: '/dev/shm',
      type: 'bind',
      source: checkAbsolutePath(input.sandbox.shmPath, `${what}: shm path`),
      options: ['rbind', 'rprivate', 'rw', 'nosuid', 'nodev', 'noexec'],
    });
  }
  return mounts;
}

/**
 * Spec of a workload container from its ContainerConfig, the pod, the image
 * config and the mounted rootfs (users resolved in its /etc/passwd and
 * /etc/group). Returns the spec, the resolved user, the stop signal and the
 * validated bind mounts.
 */
export async function buildContainerSpec(input: ContainerSpecInput): Promise<ContainerSpecResult> {
  const { config, sandbox, host } = input;
  const name = config.metadata?.name ?? '';
  const what = `container ${JSON.stringify(name)} (${input.id}) of pod sandbox ${sandbox.id}`;
  if (!name) throw new InvalidArgumentError(`${what}: metadata.name is empty`);
  const security = config.linux?.securityContext;
  const podSecurity = sandbox.config.linux?.securityContext;
  const privileged = security?.privileged ?? false;
  if (privileged && !podSecurity?.privileged) {
    throw new InvalidArgumentError(`${what}: a privileged container needs a privileged pod sandbox`);
  }
  const rootfs = checkAbsolutePath(input.rootfs, `${what}: rootfs`);
  const readonlyRootfs = security?.readonlyRootfs ?? false;
  const nsOptions = security?.namespaceOptions ?? podSecurity?.namespaceOptions;
  const hostIpc = nsOptions?.ipc === NamespaceMode.NODE;
  const userns = containerUserns(
    security?.namespaceOptions,
    podUserns(podSecurity?.namespaceOptions, `${what}: its pod`),
    what,
  );

  const user = await resolveUser(
    rootfs,
    {
      runAsUser: security?.runAsUser ? Number(security.runAsUser.value) : undefined,
      runAsUsername: security?.runAsUsername || undefined,
      runAsGroup: security?.runAsGroup ? Number(security.runAsGroup.value) : undefined,
      imageUser: input.image.config?.User,
      supplementalGroups: (security?.supplementalGroups ?? []).map(Number),
      policy: security?.supplementalGroupsPolicy ?? 0,
    },
    what,
  );
  if (userns) checkUserMapped(user, userns, what);
  const args = processArgs(config, input.image, what);
  const cwd = workingDir(config, input.image, what);
  // runc refuses a missing cwd: create it in the container's writable layer, as CRI-O does.
  try {
    const dir = await secureJoin(rootfs, cwd);
    const first = await mkdir(dir, { recursive: true, mode: 0o755 });
    // In a pod user namespace what berth makes belongs to the pod's root, not to nobody.
    if (first && userns) {
      const uid = hostIdOf(userns.uids, 0)!;
      const gid = hostIdOf(userns.gids, 0)!;
      let path = first;
      for (const part of ['', ...relative(first, dir).split('/').filter(Boolean)]) {
        path = part ? `${path}/${part}` : path;
        await chown(path, uid, gid);
      }
    }
  } catch (err) {
    throw new InvalidArgumentError(`${what}: cannot create working directory ${cwd}: ${errorMessage(err)}`, {
      cause: err,
    });
  }
  // Devices from CDI specs (DRA claims, CDI-aware device plugins) add env, nodes, mounts, hooks, groups.
  const cdi = await cdiEditsFor(cdiDeviceNames(config), input.cdiSpecDirs ?? DEFAULT_CDI_SPEC_DIRS, what);
  for (const gid of cdi.additionalGids) if (!user.additionalGids.includes(gid)) user.additionalGids.push(gid);
  const env = mergeEnv(
    containerEnv(config, input.image, { hostname: sandbox.hostname, home: user.home }, what),
    cdi.env,
  );
  const stopSignal = stopSignalOf(config.stopSignal, input.image, what);

  const capabilities = containerCapabilities(security?.capabilities, {
    privileged,
    hostCapabilities: host.boundingCapabilities,
    what,
  });
  const seccomp = await seccompFor(
    effectiveProfile(security?.seccomp, security?.seccompProfilePath ?? '', what),
    {
      privileged,
      seccompEnabled: host.seccompEnabled,
      capabilities: capabilities.bounding,
      profileRoot: input.seccompProfileRoot,
      what,
    },
  );
  const apparmorProfile = await apparmorFor(security?.apparmor, security?.apparmorProfile ?? '', {
    enabled: host.appArmorEnabled,
    privileged,
    what,
  });

  const bind = await criBindMounts(config.mounts ?? [], {
    what,
    recursiveReadOnly: () => supportsRecursiveReadOnly(input.handler),
  });
  const standard = [...defaultMounts({ privileged, hostIpc }), ...podFileMounts(input, readonlyRootfs, what)];
  const mounts = mergeMounts(standard, [...bind.mounts, ...cdi.mounts]);

  const devices = privileged
    ? { devices: await hostDevices(), rules: [] }
    : await criDevices(config.devices ?? [], what);
  if (privileged && (config.devices?.length ?? 0) > 0) {
    // A privileged container has every host device already; named ones may sit at other paths.
    const named = await criDevices(config.devices, what);
    const taken = new Set(devices.devices.map((d) => d.path));
    devices.devices.push(...named.devices.filter((d) => !taken.has(d.path)));
  }
  const taken = new Set(devices.devices.map((d) => d.path));
  devices.devices.push(...cdi.devices.filter((d) => !taken.has(d.path)));
  const resources = linuxResources(config.linux?.resources, host, what);
  resources.devices = privileged
    ? [{ allow: true, access: 'rwm' }]
    : [...defaultDeviceRules(), ...devices.rules, ...cdi.deviceRules];

  const linux: OciLinux = {
    namespaces: containerNamespaces(
      nsOptions,
      sandbox,
      { targetPidNamespace: input.targetPidNamespace, cgroupV2: host.cgroupVersion === 2, privileged },
      what,
    ),
    cgroupsPath: containerCgroupsPath(sandbox.cgroupParent, input.id, host.cgroupDriver),
    resources,
    ...(devices.devices.length > 0 ? { devices: devices.devices } : {}),
    ...(seccomp ? { seccomp } : {}),
    ...(privileged
      ? {}
      : {
          maskedPaths: pathList(security?.maskedPaths, DEFAULT_MASKED_PATHS, `${what}: masked path`),
          readonlyPaths: pathList(security?.readonlyPaths, DEFAULT_READONLY_PATHS, `${what}: read-only path`),
        }),
    ...(bind.rootfsPropagation ? { rootfsPropagation: bind.rootfsPropagation } : {}),
    ...(userns ? { uidMappings: ociMappings(userns.uids), gidMappings: ociMappings(userns.gids) } : {}),
  };

  const oomScoreAdj = config.linux?.resources ? Number(config.linux.resources.oomScoreAdj) : 0;
  if (!Number.isInteger(oomScoreAdj) || oomScoreAdj < -1000 || oomScoreAdj > 1000) {
    throw new InvalidArgumentError(`${what}: oom_score_adj ${oomScoreAdj} is outside -1000..1000`);
  }

  const spec: ContainerSpecResult['spec'] = {
    ociVersion: OCI_VERSION,
    process: {
      terminal: config.tty ?? false,
      user: { uid: user.uid, gid: user.gid, additionalGids: user.additionalGids },
      args,
      env,
      cwd,
      capabilities,
      noNewPrivileges: security?.noNewPrivs ?? false,
      oomScoreAdj: clampOomScoreAdj(oomScoreAdj, host.minOomScoreAdj),
      ...(apparmorProfile ? { apparmorProfile } : {}),
    },
    root: { path: rootfs, readonly: readonlyRootfs },
    mounts,
    ...(Object.keys(cdi.hooks).length > 0 ? { hooks: cdi.hooks } : {}),
    annotations: { ...config.annotations, ...input.annotations },
    linux,
  };
  return { spec, user, stopSignal, mounts: bind.mounts };
}
