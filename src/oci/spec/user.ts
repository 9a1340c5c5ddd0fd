/**
 * The user of a container's process, resolved against the image's own
 * /etc/passwd and /etc/group (read inside the rootfs without following
 * symlinks out of it), with the supplementary groups policy of Kubernetes.
 */
import { open } from 'node:fs/promises';
import { constants } from 'node:fs';
import { SupplementalGroupsPolicy } from '../../generated/api.js';
import { InvalidArgumentError, errnoCode } from '../../errors.js';
import { secureJoin } from '../../util/safe-path.js';
import type { ProcessUser } from './types.js';

export interface PasswdEntry {
  name: string;
  uid: number;
  gid: number;
  home: string;
}

export interface GroupEntry {
  name: string;
  gid: number;
  members: string[];
}

/** Ids runc accepts (it stores them in int32). */
const MAX_ID = 2 ** 31 - 1;
/** /etc/passwd or /etc/group bigger than this is not a user database. */
const MAX_DB_BYTES = 16 * 1024 * 1024;

function parseId(text: string): number | undefined {
  if (!/^\d+$/.test(text)) return undefined;
  const n = Number(text);
  return n <= MAX_ID ? n : undefined;
}

export function parsePasswd(text: string): PasswdEntry[] {
  const entries: PasswdEntry[] = [];
  for (const line of text.split('\n')) {
    if (line.trim() === '' || line.startsWith('#')) continue;
    const f = line.split(':');
    if (f.length < 4) continue;
    const uid = parseId(f[2]);
    const gid = parseId(f[3]);
    if (uid === undefined || gid === undefined) continue;
    entries.push({ name: f[0], uid, gid, home: f[5] || '/' });
  }
  return entries;
}

export function parseGroup(text: string): GroupEntry[] {
  const entries: GroupEntry[] = [];
  for (const line of text.split('\n')) {
    if (line.trim() === '' || line.startsWith('#')) continue;
    const f = line.split(':');
    if (f.length < 3) continue;
    const gid = parseId(f[2]);
    if (gid === undefined) continue;
    const members = (f[3] ?? '')
      .split(',')
      .map((m) => m.trim())
      .filter(Boolean);
    entries.push({ name: f[0], gid, members });
  }
  return entries;
}

/**
 * Reads a file of the container's rootfs: symlinks resolve inside the rootfs,
 * only regular files are read (a FIFO or device would block or lie).
 * undefined when the file does not exist.
 */
export async function readRootfsFile(rootfs: string, path: string): Promise<string | undefined> {
  const full = await secureJoin(rootfs, path);
  let handle;
  try {
    handle = await open(full, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (err) {
    const code = errnoCode(err);
    if (code === 'ENOENT' || code === 'ENOTDIR') return undefined;
    if (code === 'ELOOP') throw new InvalidArgumentError(`${path} in the container image is a symlink loop`);
    throw err;
  }
  try {
    const info = await handle.stat();
    if (!info.isFile())
      throw new InvalidArgumentError(`${path} in the container image is not a regular file`);
    if (info.size > MAX_DB_BYTES)
      throw new InvalidArgumentError(`${path} in the container image is too large`);
    return await handle.readFile('utf8');
  } finally {
    await handle.close();
  }
}

export interface UserRequest {
  runAsUser?: number;
  runAsUsername?: string;
  runAsGroup?: number;
  /** The image's USER ("name", "uid", "uid:gid", "name:group", …). */
  imageUser?: string;
  supplementalGroups: number[];
  policy: SupplementalGroupsPolicy;
}

/**
 * The user string the container runs as: run_as_username (or run_as_user)
 * with run_as_group, else the image's USER, else root. run_as_group alone is
 * an error, as the CRI requires.
 */
export function userString(request: UserRequest, what: string): string {
  let user = '';
  if (request.runAsUser !== undefined) user = String(request.runAsUser);
  if (request.runAsUsername) user = request.runAsUsername;
  if (user === '') {
    if (request.runAsGroup !== undefined) {
      throw new InvalidArgumentError(
        `${what}: run_as_group ${request.runAsGroup} is set without run_as_user or run_as_username`,
      );
    }
    return request.imageUser?.trim() || '0';
  }
  return request.runAsGroup !== undefined ? `${user}:${request.runAsGroup}` : user;
}

/** Resolves the process user inside rootfs. */
export async function resolveUser(rootfs: string, request: UserRequest, what: string): Promise<ProcessUser> {
  if (request.runAsUser !== undefined && (request.runAsUser < 0 || request.runAsUser > MAX_ID)) {
    throw new InvalidArgumentError(`${what}: run_as_user ${request.runAsUser} is out of range`);
  }
  if (request.runAsGroup !== undefined && (request.runAsGroup < 0 || request.runAsGroup > MAX_ID)) {
    throw new InvalidArgumentError(`${what}: run_as_group ${request.runAsGroup} is out of range`);
  }
  for (const g of request.supplementalGroups) {
    if (!Number.isInteger(g) || g < 0 || g > MAX_ID) {
      throw new InvalidArgumentError(`${what}: supplemental group ${g} is out of range`);
    }
  }
  if (
    request.policy !== SupplementalGroupsPolicy.Merge &&
    request.policy !== SupplementalGroupsPolicy.Strict
  ) {
    throw new InvalidArgumentError(`${what}: unknown supplemental_groups_policy ${request.policy}`);
  }
  const spec = userString(request, what);
  const parts = spec.split(':');
  if (parts.length > 2 || parts[0] === '' || parts[1] === '') {
    throw new InvalidArgumentError(`${what}: invalid user ${JSON.stringify(spec)}`);
  }
  let passwdCache: PasswdEntry[] | undefined;
  const passwd = async (): Promise<PasswdEntry[]> => {
    passwdCache ??= parsePasswd((await readRootfsFile(rootfs, '/etc/passwd')) ?? '');
    return passwdCache;
  };
  let groupCache: GroupEntry[] | undefined;
  const groups = async (): Promise<GroupEntry[]> => {
    groupCache ??= parseGroup((await readRootfsFile(rootfs, '/etc/group')) ?? '');
    return groupCache;
  };

  const [userPart, groupPart] = parts;
  let uid: number;
  let gid: number;
  let username: string | undefined;
  const numericUid = parseId(userPart);
  if (numericUid !== undefined) {
    uid = numericUid;
    const entry = (await passwd()).find((e) => e.uid === uid);
    username = entry?.name;
    gid = entry?.gid ?? 0;
  } else {
    if (/^\d+$/.test(userPart)) throw new InvalidArgumentError(`${what}: uid ${userPart} is out of range`);
    const entry = (await passwd()).find((e) => e.name === userPart);
    if (!entry) {
      throw new InvalidArgumentError(
        `${what}: user ${JSON.stringify(userPart)} is not in the image's /etc/passwd`,
      );
    }
    uid = entry.uid;
    gid = entry.gid;
    username = entry.name;
  }
  if (groupPart !== undefined) {
    const numericGid = parseId(groupPart);
    if (numericGid !== undefined) gid = numericGid;
    else {
      if (/^\d+$/.test(groupPart))
        throw new InvalidArgumentError(`${what}: gid ${groupPart} is out of range`);
      const group = (await groups()).find((g) => g.name === groupPart);
      if (!group) {
        throw new InvalidArgumentError(
          `${what}: group ${JSON.stringify(groupPart)} is not in the image's /etc/group`,
        );
      }
      gid = group.gid;
    }
  }

  const additional = new Set<number>([gid]);
  if (request.policy === SupplementalGroupsPolicy.Merge && username !== undefined) {
    for (const g of await groups()) if (g.members.includes(username)) additional.add(g.gid);
  }
  for (const g of request.supplementalGroups) additional.add(g);
  const home = (await passwd()).find((e) => e.uid === uid)?.home ?? '/';
  return { uid, gid, additionalGids: [...additional].sort((a, b) => a - b), home };
}
