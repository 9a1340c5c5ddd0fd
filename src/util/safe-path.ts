import { lstat, readlink } from 'node:fs/promises';
import { posix } from 'node:path';
import { InvalidArgumentError, errnoCode } from '../errors.js';

const MAX_SYMLINKS = 255;

/**
 * Rejects a relative path that would leave its base: absolute, or with a `..`
 * component. Used for names that come from outside (log paths, layer entries).
 */
export function assertContainedRelative(relative: string, what: string): string {
  if (relative.includes('\0'))
    throw new InvalidArgumentError(`${what} ${JSON.stringify(relative)} contains a NUL byte`);
  const normalized = posix.normalize(relative);
  if (posix.isAbsolute(relative) || normalized === '..' || normalized.startsWith('../')) {
    throw new InvalidArgumentError(`${what} ${JSON.stringify(relative)} escapes its base directory`);
  }
  for (const part of relative.split('/')) {
    if (part === '..')
      throw new InvalidArgumentError(`${what} ${JSON.stringify(relative)} contains a '..' component`);
  }
  return normalized === '.' ? '' : normalized;
}

/**
 * Lexically joins `unsafe` under `root` as if `root` were `/`: `..` cannot rise
 * above root. Does not look at the filesystem.
 */
export function lexicalJoin(root: string, unsafe: string): string {
  const cleaned = posix.normalize('/' + unsafe);
  return cleaned === '/' ? root : posix.join(root, cleaned);
}

/**
 * Resolves `unsafe` inside `root` following symlinks the way the kernel would
 * if `root` were the filesystem root (like securejoin): absolute link targets
 * restart at root and `..` never rises above it. Missing components are kept
 * as they are. The result is always inside root.
 */
export async function secureJoin(root: string, unsafe: string): Promise<string> {
  const pending = posix
    .normalize('/' + unsafe)
    .split('/')
    .filter(Boolean);
  const resolved: string[] = [];
  let links = 0;
  while (pending.length > 0) {
    const part = pending.shift()!;
    if (part === '.') continue;
    if (part === '..') {
      resolved.pop();
      continue;
    }
    const candidate = posix.join(root, ...resolved, part);
    let isLink = false;
    try {
      isLink = (await lstat(candidate)).isSymbolicLink();
    } catch (err) {
      if (errnoCode(err) !== 'ENOENT' && errnoCode(err) !== 'ENOTDIR') throw err;
    }
    if (!isLink) {
      resolved.push(part);
      continue;
    }
    if (++links > MAX_SYMLINKS) {
      throw new InvalidArgumentError(`path ${JSON.stringify(unsafe)} under ${root}: too many symlinks`);
    }
    const target = await readlink(candidate);
    if (posix.isAbsolute(target)) resolved.length = 0;
    pending.unshift(...target.split('/').filter(Boolean));
  }
  return posix.join(root, ...resolved);
}
