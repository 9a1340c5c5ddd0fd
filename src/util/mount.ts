/**
 * Mounting, unmounting and network namespaces through native/berth-mount
 * (plain system calls), or util-linux mount(8)/umount(8)/unshare(1) where
 * the helper was not built. Argument arrays only; no shell.
 */
import { access, constants } from 'node:fs/promises';
import { nativeHelper } from './native.js';
import { run, type RunResult } from './run.js';

const TIMEOUT_MS = 30_000;
/** berth-mount's exit code for "not a mount point". */
const EXIT_NOT_MOUNTED = 3;

export const MOUNT_HELPER = nativeHelper('berth-mount');

let helperPresent: Promise<boolean> | undefined;
/** Looked up once: the helper is built at set-up, not while berth runs. */
function useHelper(): Promise<boolean> {
  helperPresent ??= access(MOUNT_HELPER, constants.X_OK).then(
    () => true,
    () => false,
  );
  return helperPresent;
}

/** Tests run both paths: true forces util-linux, false goes back to looking for the helper. */
export function preferUtilLinux(prefer: boolean): void {
  helperPresent = prefer ? Promise.resolve(false) : undefined;
}

export class MountError extends Error {}

function failure(what: string, result: RunResult): MountError {
  const why = result.stderr.trim() || `exit ${result.code ?? result.signal}`;
  return new MountError(`${what}: ${why}`);
}

/**
 * mount -t FSTYPE -o OPTIONS SOURCE TARGET. Relative paths in the options
 * resolve against `cwd`.
 */
export async function mountFs(
  fstype: string,
  source: string,
  target: string,
  options: readonly string[],
  cwd?: string,
): Promise<void> {
  const joined = options.join(',');
  const result = (await useHelper())
    ? await run(MOUNT_HELPER, ['mount', fstype, source, target, joined], { cwd, timeoutMs: TIMEOUT_MS })
    : await run('mount', ['-t', fstype, '-o', joined, source, target], { cwd, timeoutMs: TIMEOUT_MS });
  if (result.code !== 0) throw failure(`mounting ${fstype} at ${target}`, result);
}

/**
 * Unmounts `target` (detaching it when `lazy`). Resolves false when it was
 * not a mount point, rejects when the unmount failed (busy, for one).
 */
export async function unmount(target: string, lazy = false): Promise<boolean> {
  if (await useHelper()) {
    const args = lazy ? ['umount', target, 'lazy'] : ['umount', target];
    const result = await run(MOUNT_HELPER, args, { timeoutMs: TIMEOUT_MS });
    if (result.code === 0) return true;
    if (result.code === EXIT_NOT_MOUNTED) return false;
    throw failure(`unmounting ${target}`, result);
  }
  const result = await run('umount', lazy ? ['--lazy', target] : [target], { timeoutMs: TIMEOUT_MS });
  if (result.code === 0) return true;
  if (/not mounted|no mount point specified|not found/i.test(result.stderr)) return false;
  throw failure(`unmounting ${target}`, result);
}

/** A new network namespace bind-mounted onto `file` (which must exist). */
export async function newNetnsAt(file: string): Promise<void> {
  const result = (await useHelper())
    ? await run(MOUNT_HELPER, ['netns', file], { timeoutMs: TIMEOUT_MS })
    : await run('unshare', [`--net=${file}`, 'true'], { timeoutMs: TIMEOUT_MS });
  if (result.code !== 0) throw failure(`creating a network namespace at ${file}`, result);
}

/**
 * New IPC and/or UTS namespaces, each bind-mounted onto its file (which must
 * exist); the UTS one gets `hostname`. On failure the caller unmounts both.
 */
export async function newPinnedNamespaces(
  files: { ipc?: string; uts?: string },
  hostname: string,
): Promise<void> {
  if (!files.ipc && !files.uts) return;
  let result: RunResult;
  if (await useHelper()) {
    result = await run(MOUNT_HELPER, ['pin', files.ipc ?? '-', files.uts ?? '-', hostname || '-'], {
      timeoutMs: TIMEOUT_MS,
    });
  } else {
    const args = [...(files.ipc ? [`--ipc=${files.ipc}`] : []), ...(files.uts ? [`--uts=${files.uts}`] : [])];
    const command = files.uts && hostname ? ['hostname', hostname] : ['true'];
    result = await run('unshare', [...args, ...command], { timeoutMs: TIMEOUT_MS });
  }
  if (result.code !== 0) {
    const kinds = [files.ipc && 'IPC', files.uts && 'UTS'].filter(Boolean).join(' and ');
    throw failure(
      `pinning new ${kinds} namespaces at ${[files.ipc, files.uts].filter(Boolean).join(', ')}`,
      result,
    );
  }
}
