/** CRI LinuxContainerResources → OCI linux.resources, for cgroup v1 and v2. */
import type { LinuxContainerResources } from '../../generated/api.js';
import { InvalidArgumentError } from '../../errors.js';
import type { OciResources, SpecHost } from './types.js';

/** Same syntax the kernel accepts in cpuset.cpus / cpuset.mems: "0-3,5". */
const CPUSET = /^\d+(-\d+)?(,\d+(-\d+)?)*$/;
const HUGEPAGE_SIZE = /^\d+(KB|MB|GB|TB|PB)$/;

function num(value: bigint, field: string, what: string): number {
  if (value > BigInt(Number.MAX_SAFE_INTEGER) || value < BigInt(Number.MIN_SAFE_INTEGER)) {
    throw new InvalidArgumentError(`${what}: ${field} ${value} is out of range`);
  }
  return Number(value);
}

/**
 * linux.resources for a container (also what UpdateContainerResources passes
 * to the engine's update()). Zero means "not set" for every CRI field.
 * `what` names the object in error messages. Does not include devices.
 */
export function linuxResources(
  resources: LinuxContainerResources | undefined,
  host: SpecHost,
  what: string,
): OciResources {
  const out: OciResources = {};
  if (!resources) return out;
  const cpu: NonNullable<OciResources['cpu']> = {};
  const shares = num(resources.cpuShares, 'cpu_shares', what);
  const quota = num(resources.cpuQuota, 'cpu_quota', what);
  const period = num(resources.cpuPeriod, 'cpu_period', what);
  if (shares < 0 || period < 0) throw new InvalidArgumentError(`${what}: negative cpu_shares or cpu_period`);
  if (shares > 0) cpu.shares = shares;
  if (quota !== 0) cpu.quota = quota; // -1 means unlimited
  if (period > 0) cpu.period = period;
  if (resources.cpusetCpus) {
    if (!CPUSET.test(resources.cpusetCpus)) {
      throw new InvalidArgumentError(
        `${what}: cpuset_cpus ${JSON.stringify(resources.cpusetCpus)} is not a CPU list`,
      );
    }
    cpu.cpus = resources.cpusetCpus;
  }
  if (resources.cpusetMems) {
    if (!CPUSET.test(resources.cpusetMems)) {
      throw new InvalidArgumentError(
        `${what}: cpuset_mems ${JSON.stringify(resources.cpusetMems)} is not a node list`,
      );
    }
    cpu.mems = resources.cpusetMems;
  }
  if (Object.keys(cpu).length > 0) out.cpu = cpu;

  const limit = num(resources.memoryLimitInBytes, 'memory_limit_in_bytes', what);
  const swapLimit = num(resources.memorySwapLimitInBytes, 'memory_swap_limit_in_bytes', what);
  if (limit < 0 || swapLimit < 0) throw new InvalidArgumentError(`${what}: negative memory limit`);
  if (limit > 0) {
    out.memory = { limit };
    // OCI swap is memory+swap: equal to the limit means no swap at all.
    if (swapLimit > 0 && swapLimit < limit) {
      throw new InvalidArgumentError(
        `${what}: memory_swap_limit_in_bytes ${swapLimit} is below memory_limit_in_bytes ${limit}`,
      );
    }
    if (host.swapAccounting) out.memory.swap = swapLimit > 0 ? swapLimit : limit;
  }

  if ((resources.hugepageLimits?.length ?? 0) > 0 && host.hugetlb) {
    out.hugepageLimits = resources.hugepageLimits.map((h) => {
      if (!HUGEPAGE_SIZE.test(h.pageSize)) {
        throw new InvalidArgumentError(
          `${what}: hugepage size ${JSON.stringify(h.pageSize)} is not like 2MB or 1GB`,
        );
      }
      return { pageSize: h.pageSize, limit: num(h.limit, `hugepage ${h.pageSize} limit`, what) };
    });
  }

  const unified = Object.entries(resources.unified ?? {});
  if (unified.length > 0) {
    if (host.cgroupVersion !== 2) {
      throw new InvalidArgumentError(
        `${what}: unified cgroup settings (${unified.map(([k]) => k).join(', ')}) need cgroup v2; this host uses cgroup v1`,
      );
    }
    for (const [key] of unified) {
      if (!/^[a-z0-9_]+\.[a-z0-9_.]+$/.test(key)) {
        throw new InvalidArgumentError(
          `${what}: unified cgroup key ${JSON.stringify(key)} is not a cgroup file name`,
        );
      }
    }
    out.unified = Object.fromEntries(unified);
  }
  return out;
}

/** OCI resources as the annotations containerd puts on an infra container (pod-level sizes). */
export function sandboxResourceAnnotations(
  resources: LinuxContainerResources | undefined,
  prefix: 'sandbox' | 'sandbox-overhead',
): Record<string, string> {
  if (!resources) return {};
  return {
    [`io.kubernetes.cri.${prefix}-cpu-period`]: String(resources.cpuPeriod),
    [`io.kubernetes.cri.${prefix}-cpu-quota`]: String(resources.cpuQuota),
    [`io.kubernetes.cri.${prefix}-cpu-shares`]: String(resources.cpuShares),
    [`io.kubernetes.cri.${prefix}-memory`]: String(resources.memoryLimitInBytes),
  };
}
