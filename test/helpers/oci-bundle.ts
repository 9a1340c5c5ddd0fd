/**
 * Tiny OCI bundles for engine tests: a busybox rootfs directory made from the
 * host's dynamic /usr/bin/busybox plus the libraries `ldd` lists (applets as
 * symlinks in /bin), and a minimal runc-style spec around a command.
 */
import { copyFile, mkdir, symlink, writeFile, chmod } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { runChecked } from '../../src/util/run.js';
import type { OciSpec, RuntimeHandler } from '../../src/oci/types.js';

export const BUSYBOX = '/usr/bin/busybox';

/** Shared libraries of a dynamic binary, as absolute host paths. */
export async function sharedLibraries(binary: string): Promise<string[]> {
  const { stdout } = await runChecked('ldd', [binary]);
  const libs: string[] = [];
  for (const line of stdout.split('\n')) {
    const arrow = /=>\s+(\/\S+)/.exec(line);
    const bare = /^\s*(\/\S+)\s+\(/.exec(line);
    if (arrow) libs.push(arrow[1]);
    else if (bare) libs.push(bare[1]);
  }
  return libs;
}

/** Writes a busybox rootfs into dir (which must be empty or missing). */
export async function makeBusyboxRootfs(dir: string, extra: Record<string, string> = {}): Promise<void> {
  for (const d of ['bin', 'etc', 'proc', 'sys', 'dev', 'tmp', 'root', 'home', 'var', 'run']) {
    await mkdir(join(dir, d), { recursive: true });
  }
  await chmod(join(dir, 'tmp'), 0o1777);
  await copyFile(BUSYBOX, join(dir, 'bin', 'busybox'));
  await chmod(join(dir, 'bin', 'busybox'), 0o755);
  for (const lib of await sharedLibraries(BUSYBOX)) {
    await mkdir(dirname(join(dir, lib)), { recursive: true });
    await copyFile(lib, join(dir, lib));
  }
  const { stdout } = await runChecked(BUSYBOX, ['--list']);
  for (const applet of stdout.split('\n').filter(Boolean)) {
    if (applet === 'busybox') continue;
    await symlink('busybox', join(dir, 'bin', applet)).catch(() => undefined);
  }
  const files: Record<string, string> = {
    'etc/passwd': 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n',
    'etc/group': 'root:x:0:\nnobody:x:65534:\n',
    ...extra,
  };
  for (const [path, content] of Object.entries(files)) {
    await mkdir(dirname(join(dir, path)), { recursive: true });
    await writeFile(join(dir, path), content);
  }
}

/** A unique, short container ID for a test. */
export function testId(prefix: string): string {
  return `${prefix}-${randomBytes(6).toString('hex')}`;
}

/** runc handler with its own --root under dir. */
export function runcHandler(dir: string, name = 'runc'): RuntimeHandler {
  return { name, path: '/usr/sbin/runc', root: join(dir, 'runc-root'), type: 'oci' };
}

/**
 * A minimal spec in the shape of `runc spec`: own pid/ipc/uts/mount/network
 * namespaces, the usual /proc, /dev, /sys mounts and a unique cgroup path.
 */
export function minimalSpec(
  rootfs: string,
  args: string[],
  options: Partial<{
    terminal: boolean;
    cgroupsPath: string;
    memoryLimit: number;
    env: string[];
  }> = {},
): OciSpec {
  const caps = [
    'CAP_CHOWN',
    'CAP_DAC_OVERRIDE',
    'CAP_FOWNER',
    'CAP_KILL',
    'CAP_SETGID',
    'CAP_SETUID',
    'CAP_NET_BIND_SERVICE',
  ];
  return {
    ociVersion: '1.0.2',
    process: {
      terminal: options.terminal ?? false,
      user: { uid: 0, gid: 0 },
      args,
      env: options.env ?? ['PATH=/bin:/usr/bin', 'HOME=/root'],
      cwd: '/',
      capabilities: { bounding: caps, effective: caps, permitted: caps, inheritable: [], ambient: [] },
      noNewPrivileges: true,
    },
    root: { path: rootfs, readonly: false },
    hostname: 'berth-test',
    mounts: [
      { destination: '/proc', type: 'proc', source: 'proc' },
      {
        destination: '/dev',
        type: 'tmpfs',
        source: 'tmpfs',
        options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'],
      },
      {
        destination: '/dev/pts',
        type: 'devpts',
        source: 'devpts',
        options: ['nosuid', 'noexec', 'newinstance', 'ptmxmode=0666', 'mode=0620'],
      },
      {
        destination: '/dev/shm',
        type: 'tmpfs',
        source: 'shm',
        options: ['nosuid', 'noexec', 'nodev', 'mode=1777', 'size=65536k'],
      },
      { destination: '/sys', type: 'sysfs', source: 'sysfs', options: ['nosuid', 'noexec', 'nodev', 'ro'] },
    ],
    linux: {
      namespaces: [{ type: 'pid' }, { type: 'ipc' }, { type: 'uts' }, { type: 'mount' }, { type: 'network' }],
      cgroupsPath: options.cgroupsPath ?? `/berth-test-${randomBytes(6).toString('hex')}`,
      resources: {
        devices: [{ allow: false, access: 'rwm' }],
        ...(options.memoryLimit ? { memory: { limit: options.memoryLimit, swap: options.memoryLimit } } : {}),
      },
      maskedPaths: ['/proc/kcore', '/proc/keys', '/sys/firmware'],
      readonlyPaths: ['/proc/sys', '/proc/sysrq-trigger'],
    },
  };
}
