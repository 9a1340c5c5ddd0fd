/**
 * Host facts for spec generation, detected once: capability bounding set,
 * cgroup version, seccomp/AppArmor availability, whether oom_score_adj may be
 * lowered, and per runtime binary the features it reports.
 */
import { access, readFile, writeFile } from 'node:fs/promises';
import type { Logger } from '../../log.js';
import { errnoCode } from '../../errors.js';
import { run } from '../../util/run.js';
import { detectCgroupDriver, type CgroupDriver } from '../cgroup-driver.js';
import type { RuntimeHandler } from '../types.js';
import { ALL_CAPABILITIES } from './defaults.js';
import type { RuntimeFeatures, SpecHost } from './types.js';

/** Capability names whose bits are set in a /proc status mask (hex). */
export function capabilitiesFromMask(hex: string): string[] {
  const mask = BigInt(`0x${hex.trim()}`);
  return ALL_CAPABILITIES.filter((_, bit) => (mask >> BigInt(bit)) & 1n);
}

async function statusField(field: string, pid: number | 'self' = 'self'): Promise<string | undefined> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const line = status.split('\n').find((l) => l.startsWith(`${field}:`));
  return line?.slice(field.length + 1).trim();
}

/** 2 when /sys/fs/cgroup is the unified hierarchy itself (not hybrid). */
export async function detectCgroupVersion(root = '/sys/fs/cgroup'): Promise<1 | 2> {
  try {
    await access(`${root}/cgroup.controllers`);
    return 2;
  } catch {
    return 1;
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await access(path);
    return true;
  } catch {
    return false;
  }
}

/** Swap accounting and the hugetlb controller, which runc fails on when absent. */
export async function detectControllers(
  version: 1 | 2,
  root = '/sys/fs/cgroup',
): Promise<{ swapAccounting: boolean; hugetlb: boolean }> {
  if (version === 2) {
    const controllers = (await readFile(`${root}/cgroup.controllers`, 'utf8')).split(/\s+/);
    return { swapAccounting: true, hugetlb: controllers.includes('hugetlb') };
  }
  return {
    swapAccounting: await exists(`${root}/memory/memory.memsw.limit_in_bytes`),
    hugetlb: await exists(`${root}/hugetlb/cgroup.procs`),
  };
}

let oomProbe: Promise<boolean> | undefined;

/**
 * Whether berth may lower an oom_score_adj (CAP_SYS_RESOURCE in its user
 * namespace). Probed for real: lowering berth's own score by one and raising
 * it back, because a capability bit alone says nothing inside a user namespace.
 */
export function canLowerOomScore(): Promise<boolean> {
  oomProbe ??= (async () => {
    const current = Number((await readFile('/proc/self/oom_score_adj', 'utf8')).trim());
    if (current <= -1000) return true; // already at the floor: nothing lower exists
    try {
      await writeFile('/proc/self/oom_score_adj', `${current - 1}\n`);
    } catch (err) {
      if (errnoCode(err) === 'EACCES' || errnoCode(err) === 'EPERM') return false;
      throw err;
    }
    await writeFile('/proc/self/oom_score_adj', `${current}\n`);
    return true;
  })();
  return oomProbe;
}

/** The oom_score_adj a process gets: wanted, raised to the floor berth can set, within [-1000, 1000]. */
export function clampOomScoreAdj(wanted: number, min: number): number {
  return Math.min(1000, Math.max(wanted, min, -1000));
}

export interface DetectOptions {
  /** runtime.restrict_oom_score_adj: 'auto' clamps only when berth cannot lower scores. */
  restrictOomScoreAdj: 'auto' | 'true' | 'false';
  /** runtime.cgroup_driver; 'auto' detects. */
  cgroupDriver: CgroupDriver | 'auto';
  log: Logger;
}

/** Detects the host facts once at start-up; logs the oom clamp once when it applies. */
export async function detectSpecHost(options: DetectOptions): Promise<SpecHost> {
  const bounding = capabilitiesFromMask((await statusField('CapBnd')) ?? '0');
  const seccompEnabled = (await statusField('Seccomp')) !== undefined;
  let appArmorEnabled = false;
  try {
    appArmorEnabled = (await readFile('/sys/module/apparmor/parameters/enabled', 'utf8')).trim() === 'Y';
  } catch {
    // no AppArmor module
  }
  const own = Number((await readFile('/proc/self/oom_score_adj', 'utf8')).trim());
  const restrict =
    options.restrictOomScoreAdj === 'true' ||
    (options.restrictOomScoreAdj === 'auto' && !(await canLowerOomScore()));
  if (restrict) {
    options.log.info(
      { minOomScoreAdj: own },
      'oom_score_adj below berth’s own cannot be set here (no CAP_SYS_RESOURCE): lower values are clamped',
    );
  }
  const cgroupVersion = await detectCgroupVersion();
  return {
    cgroupDriver: options.cgroupDriver === 'auto' ? await detectCgroupDriver() : options.cgroupDriver,
    cgroupVersion,
    ...(await detectControllers(cgroupVersion)),
    boundingCapabilities: bounding,
    seccompEnabled,
    appArmorEnabled,
    minOomScoreAdj: restrict ? own : -1000,
  };
}

const featureCache = new Map<string, Promise<RuntimeFeatures>>();

/** `<runtime> features` of a handler's binary (runc ≥ 1.1, crun); unknown when it has none. */
export function runtimeFeatures(handler: RuntimeHandler): Promise<RuntimeFeatures> {
  let cached = featureCache.get(handler.path);
  if (!cached) {
    cached = (async (): Promise<RuntimeFeatures> => {
      try {
        const result = await run(handler.path, ['features'], { timeoutMs: 10_000 });
        if (result.code !== 0) return { known: false, mountOptions: [] };
        const parsed = JSON.parse(result.stdout) as { mountOptions?: unknown };
        const options = Array.isArray(parsed.mountOptions)
          ? parsed.mountOptions.filter((o): o is string => typeof o === 'string')
          : [];
        return { known: true, mountOptions: options };
      } catch {
        return { known: false, mountOptions: [] };
      }
    })();
    featureCache.set(handler.path, cached);
  }
  return cached;
}

/** Whether the handler's runtime can make a mount read-only recursively (`rro`). */
export async function supportsRecursiveReadOnly(handler: RuntimeHandler): Promise<boolean> {
  return (await runtimeFeatures(handler)).mountOptions.includes('rro');
}
