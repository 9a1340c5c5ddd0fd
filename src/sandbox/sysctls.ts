/**
 * Pod sysctls: only those the kernel scopes to a namespace the pod owns may be
 * set (the same set kubelet considers namespaced); anything else would change
 * the node for every pod and is refused.
 */
import { InvalidArgumentError } from '../errors.js';

export interface SysctlNamespaces {
  hostNetwork: boolean;
  hostIpc: boolean;
}

type Scope = 'ipc' | 'net';

const IPC_EXACT = new Set(['kernel.sem']);
const IPC_PREFIXES = ['kernel.shm', 'kernel.msg', 'fs.mqueue.'];
const NAME = /^[A-Za-z0-9_-]+(\.[A-Za-z0-9_/:@+-]+)+$/;

/**
 * Kubernetes accepts `/` as the separator (net/ipv4/conf/eth0.100/forwarding);
 * then dots inside a component become slashes, as kubelet converts them, so
 * the name means the same /proc/sys path in dot form.
 */
export function normalizeSysctlName(name: string): string {
  const firstSep = name.search(/[./]/);
  if (firstSep === -1 || name[firstSep] === '.') return name;
  return name.replace(/[./]/g, (c) => (c === '/' ? '.' : '/'));
}

function scopeOf(name: string): Scope | undefined {
  if (IPC_EXACT.has(name) || IPC_PREFIXES.some((p) => name.startsWith(p))) return 'ipc';
  if (name.startsWith('net.')) return 'net';
  return undefined;
}

/**
 * Validates the pod's sysctls against its namespaces and returns them with
 * names in dot form. Throws InvalidArgument naming the first offending sysctl.
 */
export function validateSysctls(
  sysctls: Record<string, string>,
  namespaces: SysctlNamespaces,
): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [rawName, value] of Object.entries(sysctls)) {
    const name = normalizeSysctlName(rawName);
    // Empty components ("a..b", "a/../b") could walk out of /proc/sys once turned into a path.
    if (!NAME.test(name) || name.split(/[./]/).some((part) => part === '')) {
      throw new InvalidArgumentError(`sysctl ${JSON.stringify(rawName)} is not a valid sysctl name`);
    }
    if (/[\0\n\r]/.test(value)) {
      throw new InvalidArgumentError(
        `sysctl ${rawName}: value ${JSON.stringify(value)} contains a control character`,
      );
    }
    const scope = scopeOf(name);
    if (!scope) {
      throw new InvalidArgumentError(
        `sysctl ${rawName} is not namespaced (allowed: kernel.shm*, kernel.msg*, kernel.sem, fs.mqueue.*, net.*)`,
      );
    }
    if (scope === 'net' && namespaces.hostNetwork) {
      throw new InvalidArgumentError(
        `sysctl ${rawName} cannot be set: the pod uses the host's network namespace`,
      );
    }
    if (scope === 'ipc' && namespaces.hostIpc) {
      throw new InvalidArgumentError(
        `sysctl ${rawName} cannot be set: the pod uses the host's IPC namespace`,
      );
    }
    if (name in out) throw new InvalidArgumentError(`sysctl ${rawName} is given twice (also as ${name})`);
    out[name] = value;
  }
  return out;
}
