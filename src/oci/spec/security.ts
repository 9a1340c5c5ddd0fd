/**
 * Namespaces and AppArmor of infra and workload containers, from the CRI
 * NamespaceOption and SecurityProfile.
 */
import { readFile } from 'node:fs/promises';
import {
  NamespaceMode,
  SecurityProfile_ProfileType,
  type NamespaceOption,
  type SecurityProfile,
} from '../../generated/api.js';
import { FailedPreconditionError, InvalidArgumentError } from '../../errors.js';
import { containerUserns, podUserns } from '../userns/mappings.js';
import type { OciNamespace, SandboxFacts } from './types.js';

function modeName(mode: NamespaceMode): string {
  return NamespaceMode[mode] ?? String(mode);
}

/**
 * Namespaces of the infra container: the pod's user namespace (a pinned file)
 * when it has one, the pod's netns file (or the host's network and UTS), new
 * IPC unless NODE, new PID unless NODE, new mount.
 */
export function sandboxNamespaces(
  options: NamespaceOption | undefined,
  netnsPath: string | undefined,
  what: string,
  usernsPath?: string,
): OciNamespace[] {
  const ns: OciNamespace[] = [{ type: 'mount' }];
  if (podUserns(options, what)) {
    if (!usernsPath) throw new FailedPreconditionError(`${what}: the pod user namespace was not made`);
    ns.push({ type: 'user', path: usernsPath });
  }
  const network = options?.network ?? NamespaceMode.POD;
  if (network === NamespaceMode.NODE) {
    if (netnsPath)
      throw new InvalidArgumentError(`${what}: host network asked for, but a netns path was given`);
  } else if (network === NamespaceMode.POD) {
    if (!netnsPath) throw new InvalidArgumentError(`${what}: pod network namespace has no netns path`);
    ns.push({ type: 'network', path: netnsPath }, { type: 'uts' });
  } else
    throw new InvalidArgumentError(
      `${what}: network namespace mode ${modeName(network)} is not valid for a pod`,
    );
  const ipc = options?.ipc ?? NamespaceMode.POD;
  if (ipc === NamespaceMode.POD) ns.push({ type: 'ipc' });
  else if (ipc !== NamespaceMode.NODE)
    throw new InvalidArgumentError(`${what}: IPC namespace mode ${modeName(ipc)} is not valid for a pod`);
  const pid = options?.pid ?? NamespaceMode.CONTAINER;
  if (pid === NamespaceMode.POD || pid === NamespaceMode.CONTAINER) ns.push({ type: 'pid' });
  else if (pid !== NamespaceMode.NODE)
    throw new InvalidArgumentError(`${what}: PID namespace mode ${modeName(pid)} is not valid for a pod`);
  return ns;
}

/**
 * Namespaces of a workload container: it joins the pod's user namespace when
 * the pod has one, the pod's network, UTS and IPC (or the host's), the pod's
 * PID namespace when shared, a target container's for TARGET, its own
 * otherwise; always its own mount namespace, and its own cgroup namespace on
 * cgroup v2 unless privileged.
 */
export function containerNamespaces(
  options: NamespaceOption | undefined,
  sandbox: Pick<SandboxFacts, 'namespacePaths' | 'config'>,
  extra: { targetPidNamespace?: string; cgroupV2: boolean; privileged: boolean },
  what: string,
): OciNamespace[] {
  const paths = sandbox.namespacePaths;
  const ns: OciNamespace[] = [{ type: 'mount' }];
  const pod = podUserns(sandbox.config.linux?.securityContext?.namespaceOptions, `${what}: its pod`);
  if (containerUserns(options, pod, what)) {
    if (!paths.user) throw new FailedPreconditionError(`${what}: the pod has no user namespace to join`);
    ns.push({ type: 'user', path: paths.user });
  }
  const network = options?.network ?? NamespaceMode.POD;
  if (network === NamespaceMode.POD) {
    if (!paths.network)
      throw new FailedPreconditionError(`${what}: the pod has no network namespace to join`);
    ns.push({ type: 'network', path: paths.network });
    if (!paths.uts) throw new FailedPreconditionError(`${what}: the pod has no UTS namespace to join`);
    ns.push({ type: 'uts', path: paths.uts });
  } else if (network !== NamespaceMode.NODE) {
    throw new InvalidArgumentError(`${what}: network namespace mode ${modeName(network)} is not supported`);
  }
  const ipc = options?.ipc ?? NamespaceMode.POD;
  if (ipc === NamespaceMode.POD) {
    if (!paths.ipc) throw new FailedPreconditionError(`${what}: the pod has no IPC namespace to join`);
    ns.push({ type: 'ipc', path: paths.ipc });
  } else if (ipc !== NamespaceMode.NODE) {
    throw new InvalidArgumentError(`${what}: IPC namespace mode ${modeName(ipc)} is not supported`);
  }
  const pid = options?.pid ?? NamespaceMode.CONTAINER;
  switch (pid) {
    case NamespaceMode.CONTAINER:
      ns.push({ type: 'pid' });
      break;
    case NamespaceMode.POD:
      if (!paths.pid)
        throw new FailedPreconditionError(
          `${what}: asks for the pod's PID namespace, but the pod does not share one`,
        );
      ns.push({ type: 'pid', path: paths.pid });
      break;
    case NamespaceMode.TARGET:
      if (!extra.targetPidNamespace) {
        throw new InvalidArgumentError(`${what}: PID namespace mode TARGET without a target container`);
      }
      ns.push({ type: 'pid', path: extra.targetPidNamespace });
      break;
    case NamespaceMode.NODE:
      break;
    default:
      throw new InvalidArgumentError(`${what}: PID namespace mode ${modeName(pid)} is not supported`);
  }
  if (extra.cgroupV2 && !extra.privileged) ns.push({ type: 'cgroup' });
  return ns;
}

async function apparmorProfileLoaded(name: string): Promise<boolean> {
  try {
    const text = await readFile('/sys/kernel/security/apparmor/profiles', 'utf8');
    return text.split('\n').some((line) => line.replace(/ \(.*\)$/, '') === name);
  } catch {
    return false;
  }
}

/** The profile berth's RuntimeDefault maps to where AppArmor is on (loaded by the administrator). */
export const APPARMOR_DEFAULT_PROFILE = 'berth-default';

/**
 * process.apparmorProfile: none on a host without AppArmor (RuntimeDefault and
 * Unconfined mean nothing there, a Localhost profile is an error).
 */
export async function apparmorFor(
  profile: SecurityProfile | undefined,
  deprecated: string,
  options: { enabled: boolean; privileged: boolean; what: string },
): Promise<string | undefined> {
  let type = profile?.profileType;
  let ref = profile?.localhostRef ?? '';
  if (!profile) {
    if (deprecated === '' || deprecated === 'unconfined') type = SecurityProfile_ProfileType.Unconfined;
    else if (deprecated === 'runtime/default') type = SecurityProfile_ProfileType.RuntimeDefault;
    else if (deprecated.startsWith('localhost/')) {
      type = SecurityProfile_ProfileType.Localhost;
      ref = deprecated.slice('localhost/'.length);
    } else
      throw new InvalidArgumentError(
        `${options.what}: unknown AppArmor profile ${JSON.stringify(deprecated)}`,
      );
  }
  if (type === SecurityProfile_ProfileType.Localhost) {
    if (!options.enabled) {
      throw new FailedPreconditionError(
        `${options.what}: AppArmor profile ${JSON.stringify(ref)} asked for, but AppArmor is not available on this host`,
      );
    }
    if (!(await apparmorProfileLoaded(ref))) {
      throw new FailedPreconditionError(
        `${options.what}: AppArmor profile ${JSON.stringify(ref)} is not loaded`,
      );
    }
    return ref;
  }
  if (!options.enabled || options.privileged || type === SecurityProfile_ProfileType.Unconfined)
    return undefined;
  if (type === SecurityProfile_ProfileType.RuntimeDefault) {
    return (await apparmorProfileLoaded(APPARMOR_DEFAULT_PROFILE)) ? APPARMOR_DEFAULT_PROFILE : undefined;
  }
  throw new InvalidArgumentError(`${options.what}: unknown AppArmor profile type ${type}`);
}
