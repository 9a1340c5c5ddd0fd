/**
 * Glue between the sandbox manager and the pod's files and sysctls: the
 * configured default sysctls merged under the pod's own, validated for the
 * pod's namespaces.
 */
import { InvalidArgumentError } from '../errors.js';
import { normalizeSysctlName, validateSysctls, type SysctlNamespaces } from './sysctls.js';

/**
 * runtime.default_sysctls (KEY=VALUE) under the pod's sysctls. A default that
 * cannot apply to this pod (a net.* sysctl with the host's network, an IPC one
 * with the host's IPC) is left out rather than failing the pod; the pod's own
 * sysctls are validated strictly.
 */
export function validatePodSysctls(
  defaults: string[],
  podSysctls: Record<string, string>,
  namespaces: SysctlNamespaces,
): Record<string, string> {
  const merged: Record<string, string> = {};
  for (const entry of defaults) {
    const eq = entry.indexOf('=');
    if (eq <= 0) {
      throw new InvalidArgumentError(
        `runtime.default_sysctls entry ${JSON.stringify(entry)} is not KEY=VALUE`,
      );
    }
    const name = normalizeSysctlName(entry.slice(0, eq).trim());
    const value = entry.slice(eq + 1).trim();
    try {
      Object.assign(merged, validateSysctls({ [name]: value }, namespaces));
    } catch {
      // Not applicable to this pod's namespaces.
    }
  }
  const own = validateSysctls(podSysctls, namespaces);
  return { ...merged, ...own };
}
