/**
 * Device nodes of a container: the CRI devices (stat'ed on the host for type,
 * major and minor), all host devices for privileged containers, and the
 * device cgroup rules.
 */
import { opendir, realpath, stat } from 'node:fs/promises';
import { posix } from 'node:path';
import type { Device } from '../../generated/api.js';
import { InvalidArgumentError, errnoCode, errorMessage } from '../../errors.js';
import { checkAbsolutePath } from './mounts.js';
import type { OciDevice, OciDeviceRule } from './types.js';

/** Linux dev_t encoding (glibc's gnu_dev_major/minor). */
export function majorOf(rdev: bigint): number {
  return Number(((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & ~0xfffn));
}
export function minorOf(rdev: bigint): number {
  return Number((rdev & 0xffn) | ((rdev >> 12n) & ~0xffn));
}

/** The device node at a host path, or undefined if it is no char/block device. */
export async function deviceFromPath(
  hostPath: string,
  containerPath: string,
): Promise<OciDevice | undefined> {
  const info = await stat(hostPath, { bigint: true });
  let type: OciDevice['type'];
  if (info.isCharacterDevice()) type = 'c';
  else if (info.isBlockDevice()) type = 'b';
  else return undefined;
  return {
    type,
    path: containerPath,
    major: majorOf(info.rdev),
    minor: minorOf(info.rdev),
    fileMode: Number(info.mode & 0o777n),
    uid: Number(info.uid),
    gid: Number(info.gid),
  };
}

/** Directories below /dev that hold no device nodes of the host worth giving a container. */
const SKIP_DEV_DIRS = new Set(['pts', 'shm', 'fd', 'mqueue', '.lxc', '.lxd-mounts', '.udev']);

/** Every char/block device under a host directory (recursively), as nodes at the same relative paths below `containerDir`. */
export async function devicesUnder(hostDir: string, containerDir: string, top = true): Promise<OciDevice[]> {
  const found: OciDevice[] = [];
  const dir = await opendir(hostDir);
  for await (const entry of dir) {
    const host = posix.join(hostDir, entry.name);
    const inner = posix.join(containerDir, entry.name);
    if (entry.isDirectory()) {
      if (top && SKIP_DEV_DIRS.has(entry.name)) continue;
      found.push(...(await devicesUnder(host, inner, false)));
    } else if (entry.isCharacterDevice() || entry.isBlockDevice()) {
      if (host === '/dev/console') continue; // the container gets its own console
      try {
        const dev = await deviceFromPath(host, inner);
        if (dev) found.push(dev);
      } catch (err) {
        if (errnoCode(err) !== 'ENOENT') throw err; // a device that vanished meanwhile is skipped
      }
    }
  }
  return found;
}

/** All host devices (privileged containers). */
export function hostDevices(): Promise<OciDevice[]> {
  return devicesUnder('/dev', '/dev');
}

/** Checks "rwm"-style permissions. */
function checkPermissions(permissions: string, what: string): string {
  const p = permissions === '' ? 'rwm' : permissions;
  if (!/^[rwm]{1,3}$/.test(p) || new Set(p).size !== p.length) {
    throw new InvalidArgumentError(
      `${what}: device permissions ${JSON.stringify(permissions)} must be letters of "rwm"`,
    );
  }
  return p;
}

/** Device nodes and allow rules of the CRI devices. */
export async function criDevices(
  devices: readonly Device[],
  what: string,
): Promise<{ devices: OciDevice[]; rules: OciDeviceRule[] }> {
  const nodes: OciDevice[] = [];
  const rules: OciDeviceRule[] = [];
  for (const d of devices) {
    const containerPath = checkAbsolutePath(d.containerPath, `${what}: device container_path`);
    const hostPathGiven = checkAbsolutePath(d.hostPath, `${what}: device host_path`);
    const access = checkPermissions(d.permissions, `${what}: device ${hostPathGiven}`);
    let hostPath: string;
    let found: OciDevice[];
    try {
      hostPath = await realpath(hostPathGiven);
      const info = await stat(hostPath);
      if (info.isDirectory()) found = await devicesUnder(hostPath, containerPath, false);
      else {
        const dev = await deviceFromPath(hostPath, containerPath);
        if (!dev) throw new InvalidArgumentError(`${what}: ${hostPathGiven} is not a device node`);
        found = [dev];
      }
    } catch (err) {
      if (err instanceof InvalidArgumentError) throw err;
      throw new InvalidArgumentError(`${what}: device ${hostPathGiven}: ${errorMessage(err)}`, {
        cause: err,
      });
    }
    for (const dev of found) {
      nodes.push(dev);
      rules.push({ allow: true, type: dev.type as 'c' | 'b', major: dev.major, minor: dev.minor, access });
    }
  }
  return { devices: nodes, rules };
}

/**
 * Device cgroup rules every unprivileged container starts with: deny all,
 * then the nodes every container has (null, zero, full, random, urandom,
 * tty, ptmx, the pty slaves) — runc adds these itself, other runtimes may not.
 */
export function defaultDeviceRules(): OciDeviceRule[] {
  const allow = (type: 'c', major: number, minor: number | undefined): OciDeviceRule => ({
    allow: true,
    type,
    major,
    ...(minor === undefined ? {} : { minor }),
    access: 'rwm',
  });
  return [
    { allow: false, access: 'rwm' },
    allow('c', 1, 3),
    allow('c', 1, 5),
    allow('c', 1, 7),
    allow('c', 1, 8),
    allow('c', 1, 9),
    allow('c', 5, 0),
    allow('c', 5, 2),
    allow('c', 136, undefined),
  ];
}
