/**
 * Capability sets of a container from CRI add/drop lists, as Kubernetes
 * defines them: names with or without CAP_, any case; "ALL" in add grants every
 * capability the host allows, "ALL" in drop starts from none; then single adds,
 * then single drops (a drop wins over an add of the same capability).
 */
import type { Capability } from '../../generated/api.js';
import { FailedPreconditionError, InvalidArgumentError } from '../../errors.js';
import { ALL_CAPABILITIES, DEFAULT_CAPABILITIES } from './defaults.js';

export type CapabilitySets = Record<
  'bounding' | 'effective' | 'inheritable' | 'permitted' | 'ambient',
  string[]
>;

const KNOWN = new Set<string>(ALL_CAPABILITIES);

/** "net_admin", "NET_ADMIN", "CAP_NET_ADMIN" → "CAP_NET_ADMIN"; unknown names are an error. */
export function normalizeCapability(name: string, what: string): string {
  const upper = name.trim().toUpperCase();
  const full = upper.startsWith('CAP_') ? upper : `CAP_${upper}`;
  if (!KNOWN.has(full)) throw new InvalidArgumentError(`${what}: unknown capability ${JSON.stringify(name)}`);
  return full;
}

function isAll(name: string): boolean {
  return name.trim().toUpperCase() === 'ALL';
}

/** In the order of capability numbers, so specs are stable. */
function ordered(set: Set<string>): string[] {
  return ALL_CAPABILITIES.filter((c) => set.has(c));
}

/**
 * The container's capability sets. `hostCapabilities` is berth's bounding set:
 * ALL and privileged take what is there; naming a capability the host lacks is
 * an error (runc would fail later with a less helpful message).
 */
export function containerCapabilities(
  capabilities: Capability | undefined,
  options: { privileged: boolean; hostCapabilities: readonly string[]; what: string },
): CapabilitySets {
  const host = new Set(options.hostCapabilities);
  if (options.privileged) {
    const all = ordered(host);
    return { bounding: all, effective: all, permitted: all, inheritable: [], ambient: [] };
  }
  const add = capabilities?.addCapabilities ?? [];
  const drop = capabilities?.dropCapabilities ?? [];
  const ambientNames = capabilities?.addAmbientCapabilities ?? [];
  const set = new Set<string>(DEFAULT_CAPABILITIES.filter((c) => host.has(c)));
  if (add.some(isAll)) for (const c of host) set.add(c);
  if (drop.some(isAll)) set.clear();
  const requireHost = (cap: string): string => {
    if (!host.has(cap)) {
      throw new FailedPreconditionError(
        `${options.what}: capability ${cap} is not in berth's bounding set on this host`,
      );
    }
    return cap;
  };
  for (const name of add) if (!isAll(name)) set.add(requireHost(normalizeCapability(name, options.what)));
  for (const name of drop) if (!isAll(name)) set.delete(normalizeCapability(name, options.what));
  // Ambient capabilities must also be permitted and inheritable to take effect.
  const ambient = new Set<string>();
  for (const name of ambientNames) {
    const cap = requireHost(normalizeCapability(name, options.what));
    ambient.add(cap);
    set.add(cap);
  }
  const list = ordered(set);
  const amb = ordered(ambient);
  return { bounding: list, effective: list, permitted: list, inheritable: amb, ambient: amb };
}
