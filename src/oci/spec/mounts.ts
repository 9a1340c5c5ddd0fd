/**
 * Bind mounts of a container: the CRI mounts (validated paths, propagation
 * checked against the host's mount table, read-only and recursive read-only),
 * the pod's files, and the standard mounts they may override.
 */
import { mkdir, readFile, realpath } from 'node:fs/promises';
import { posix } from 'node:path';
import { MountPropagation, type Mount } from '../../generated/api.js';
import {
  FailedPreconditionError,
  InternalError,
  InvalidArgumentError,
  errnoCode,
  errorMessage,
} from '../../errors.js';
import type { OciMount } from './types.js';

/** Rejects relative paths, `..` components and NUL; returns the cleaned path. */
export function checkAbsolutePath(path: string, what: string): string {
  if (path === '') throw new InvalidArgumentError(`${what} is empty`);
  if (path.includes('\0'))
    throw new InvalidArgumentError(`${what} ${JSON.stringify(path)} contains a NUL byte`);
  if (!posix.isAbsolute(path))
    throw new InvalidArgumentError(`${what} ${JSON.stringify(path)} is not an absolute path`);
  if (path.split('/').includes('..')) {
    throw new InvalidArgumentError(`${what} ${JSON.stringify(path)} contains a '..' component`);
  }
  return posix.normalize(path).replace(/(.)\/$/, '$1');
}

/** One line of /proc/self/mountinfo: where it is mounted and its propagation tags. */
export interface MountInfo {
  mountPoint: string;
  /** Optional fields: "shared:N", "master:N", "propagate_from:N", "unbindable". */
  optional: string[];
}

/** mountinfo escapes space, tab, newline and backslash as octal. */
function unescapeMountPath(path: string): string {
  return path.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

export function parseMountInfo(text: string): MountInfo[] {
  const mounts: MountInfo[] = [];
  for (const line of text.split('\n')) {
    if (!line) continue;
    const fields = line.split(' ');
    const sep = fields.indexOf('-', 6);
    if (fields.length < 7 || sep < 0) continue;
    mounts.push({ mountPoint: unescapeMountPath(fields[4]), optional: fields.slice(6, sep) });
  }
  return mounts;
}

/** The mount a path lives on: the last-mounted entry with the longest matching mount point. */
export function mountOf(path: string, table: readonly MountInfo[]): MountInfo | undefined {
  let best: MountInfo | undefined;
  for (const m of table) {
    const inside = m.mountPoint === '/' || path === m.mountPoint || path.startsWith(`${m.mountPoint}/`);
    if (inside && (!best || m.mountPoint.length >= best.mountPoint.length)) best = m;
  }
  return best;
}

async function hostMountTable(): Promise<MountInfo[]> {
  return parseMountInfo(await readFile('/proc/self/mountinfo', 'utf8'));
}

/** Propagation of a mount of the host as the kernel reports it. */
export function propagationOf(info: MountInfo): 'shared' | 'slave' | 'private' {
  if (info.optional.some((o) => o.startsWith('shared:'))) return 'shared';
  if (info.optional.some((o) => o.startsWith('master:'))) return 'slave';
  return 'private';
}

/** Sorts mounts so that parents come before what is mounted below them (stable). */
export function sortMounts<T extends { destination: string }>(mounts: readonly T[]): T[] {
  const depth = (m: T) => posix.normalize(m.destination).split('/').filter(Boolean).length;
  return mounts
    .map((m, i) => ({ m, i }))
    .sort((a, b) => depth(a.m) - depth(b.m) || a.i - b.i)
    .map(({ m }) => m);
}

export interface BindMountsResult {
  mounts: OciMount[];
  /** linux.rootfsPropagation needed by the mounts (rslave or rshared), if any. */
  rootfsPropagation?: 'rslave' | 'rshared';
}

/**
 * Turns CRI mounts into OCI bind mounts. A missing host path is created as a
 * directory (as containerd and CRI-O do); symlinks in it are resolved on the
 * host. `recursiveReadOnly` says whether the runtime supports `rro`.
 */
export async function criBindMounts(
  mounts: readonly Mount[],
  options: { what: string; recursiveReadOnly: () => Promise<boolean> },
): Promise<BindMountsResult> {
  const what = options.what;
  const result: OciMount[] = [];
  const seen = new Set<string>();
  let rootfsPropagation: BindMountsResult['rootfsPropagation'];
  let table: MountInfo[] | undefined;
  for (const m of mounts) {
    const dest = checkAbsolutePath(m.containerPath, `${what}: mount container_path`);
    if (m.image !== undefined && m.image.image !== '') {
      // The container manager mounts image volumes and hands them here as host paths.
      throw new InternalError(
        `${what}: the image volume at ${dest} was not mounted before the spec was built`,
      );
    }
    let source = checkAbsolutePath(m.hostPath, `${what}: mount host_path for ${dest}`);
    if (seen.has(dest)) throw new InvalidArgumentError(`${what}: two mounts at ${dest}`);
    seen.add(dest);
    if ((m.uidMappings?.length ?? 0) > 0 || (m.gidMappings?.length ?? 0) > 0) {
      throw new InvalidArgumentError(`${what}: id-mapped mounts (${dest}) are not supported by berth`);
    }
    try {
      source = await realpath(source);
    } catch (err) {
      if (errnoCode(err) !== 'ENOENT') {
        throw new InvalidArgumentError(`${what}: mount host_path ${source}: ${errorMessage(err)}`);
      }
      await mkdir(source, { recursive: true, mode: 0o755 });
      source = await realpath(source);
    }
    const opts = ['rbind'];
    switch (m.propagation) {
      case MountPropagation.PROPAGATION_PRIVATE:
        opts.push('rprivate');
        break;
      case MountPropagation.PROPAGATION_HOST_TO_CONTAINER: {
        table ??= await hostMountTable();
        const info = mountOf(source, table);
        if (!info || propagationOf(info) === 'private') {
          throw new FailedPreconditionError(
            `${what}: mount ${source} → ${dest} asks for host-to-container propagation, but ${info?.mountPoint ?? source} is a private mount on the host (it must be shared or slave)`,
          );
        }
        opts.push('rslave');
        rootfsPropagation ??= 'rslave';
        break;
      }
      case MountPropagation.PROPAGATION_BIDIRECTIONAL: {
        table ??= await hostMountTable();
        const info = mountOf(source, table);
        if (!info || propagationOf(info) !== 'shared') {
          throw new FailedPreconditionError(
            `${what}: mount ${source} → ${dest} asks for bidirectional propagation, but ${info?.mountPoint ?? source} is not a shared mount on the host`,
          );
        }
        opts.push('rshared');
        rootfsPropagation = 'rshared';
        break;
      }
      default:
        throw new InvalidArgumentError(`${what}: mount ${dest} has unknown propagation ${m.propagation}`);
    }
    if (m.recursiveReadOnly) {
      if (!m.readonly) {
        throw new InvalidArgumentError(`${what}: mount ${dest} is recursive read-only but not read-only`);
      }
      if (m.propagation !== MountPropagation.PROPAGATION_PRIVATE) {
        throw new InvalidArgumentError(
          `${what}: recursive read-only mount ${dest} needs private propagation`,
        );
      }
      if (!(await options.recursiveReadOnly())) {
        throw new FailedPreconditionError(
          `${what}: recursive read-only mount ${dest} is not supported by the runtime handler`,
        );
      }
      opts.push('rro');
    } else opts.push(m.readonly ? 'ro' : 'rw');
    // selinux_relabel: this host has no SELinux; nothing to relabel.
    result.push({ destination: dest, type: 'bind', source, options: opts });
  }
  return { mounts: result, rootfsPropagation };
}

/**
 * Merges the standard mounts with the container's own: a container mount at
 * the same destination replaces the standard one, a container /dev replaces
 * everything below /dev. Sorted so parents mount first.
 */
export function mergeMounts(standard: readonly OciMount[], own: readonly OciMount[]): OciMount[] {
  const ownDest = new Set(own.map((m) => m.destination));
  const kept = standard.filter(
    (m) => !ownDest.has(m.destination) && !(ownDest.has('/dev') && m.destination.startsWith('/dev/')),
  );
  return sortMounts([...kept, ...own]);
}
