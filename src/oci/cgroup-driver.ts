import { access, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { InvalidArgumentError } from '../errors.js';

export type CgroupDriver = 'cgroupfs' | 'systemd';

/** systemd is the driver when systemd is PID 1 (its runtime dir marks that). */
export async function detectCgroupDriver(): Promise<'cgroupfs' | 'systemd'> {
  try {
    await access('/run/systemd/system');
    return 'systemd';
  } catch {
    return 'cgroupfs';
  }
}

/** The prefix of container scopes/dirs berth creates (CRI-O uses "crio"). */
export const CGROUP_PREFIX = 'berth';

/** True for systemd slice notation: `kubepods-burstable-pod123.slice`. */
export function isSystemdSlice(parent: string): boolean {
  return parent.endsWith('.slice') && !parent.includes('/');
}

/**
 * Expands a slice name into its cgroupfs path: each dash opens a nested slice,
 * `a-b-c.slice` → `/a.slice/a-b.slice/a-b-c.slice` (as systemd lays them out).
 */
export function expandSlice(slice: string): string {
  if (!isSystemdSlice(slice))
    throw new InvalidArgumentError(`cgroup parent ${JSON.stringify(slice)} is not a systemd slice`);
  const name = slice.slice(0, -'.slice'.length);
  if (name === '-' || name === '') return '/';
  if (name.startsWith('-') || name.endsWith('-') || name.includes('--')) {
    throw new InvalidArgumentError(`cgroup parent ${JSON.stringify(slice)} is not a valid slice name`);
  }
  const parts = name.split('-');
  let path = '';
  let prefix = '';
  for (const part of parts) {
    prefix = prefix ? `${prefix}-${part}` : part;
    path += `/${prefix}.slice`;
  }
  return path;
}

/** Validates a cgroup parent for the driver; returns it normalised. */
export function validateCgroupParent(parent: string, driver: CgroupDriver): string {
  if (parent === '') return parent;
  if (parent.includes('\0') || parent.split('/').includes('..')) {
    throw new InvalidArgumentError(`cgroup parent ${JSON.stringify(parent)} contains '..' or NUL`);
  }
  if (driver === 'systemd') {
    if (!isSystemdSlice(parent)) {
      throw new InvalidArgumentError(
        `cgroup parent ${JSON.stringify(parent)} must be a systemd slice (like kubepods-burstable-pod123.slice) with the systemd cgroup driver`,
      );
    }
    expandSlice(parent);
    return parent;
  }
  if (isSystemdSlice(parent)) {
    // kubelet with cgroupDriver=systemd talking to a cgroupfs runtime: use the expanded path.
    return expandSlice(parent);
  }
  return parent.startsWith('/') ? parent : `/${parent}`;
}

/**
 * linux.cgroupsPath for a container: `/parent/berth-ID` (cgroupfs) or
 * `parent.slice:berth:ID` (systemd, which runc turns into berth-ID.scope).
 */
export function containerCgroupsPath(parent: string, id: string, driver: CgroupDriver): string {
  const normalized = validateCgroupParent(parent, driver);
  if (driver === 'systemd') return `${normalized || 'system.slice'}:${CGROUP_PREFIX}:${id}`;
  return `${normalized === '/' ? '' : normalized}/${CGROUP_PREFIX}-${id}`;
}

/** The cgroupfs path (relative to a hierarchy root) a parent names under either driver. */
export function cgroupParentPath(parent: string, driver: CgroupDriver): string {
  const normalized = validateCgroupParent(parent, driver);
  return isSystemdSlice(normalized) ? expandSlice(normalized) : normalized;
}

/** v1 controllers a monitor process is placed in (cpuset needs cpus/mems first: skipped). */
const V1_CONTROLLERS = ['memory', 'cpu', 'cpuacct', 'pids', 'blkio'];

/**
 * Moves a process (conmon) into the cgroup `parent` names, creating it where
 * missing: on cgroup v2 the unified path, on v1 each of the usual controllers.
 */
export async function moveToCgroup(
  pid: number,
  parent: string,
  driver: CgroupDriver,
  root = '/sys/fs/cgroup',
): Promise<void> {
  const path = cgroupParentPath(parent, driver);
  let unified = false;
  try {
    await access(join(root, 'cgroup.controllers'));
    unified = true;
  } catch {
    // v1 or hybrid
  }
  const bases = unified ? [root] : V1_CONTROLLERS.map((c) => join(root, c));
  for (const base of bases) {
    try {
      await access(join(base, 'cgroup.procs'));
    } catch {
      continue; // controller not mounted here
    }
    const dir = join(base, path);
    await mkdir(dir, { recursive: true });
    await writeFile(join(dir, 'cgroup.procs'), `${pid}\n`);
  }
}
