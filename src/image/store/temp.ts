/**
 * Names of temp files and dirs in the image store carry the creating
 * process's pid, so start-up reconciliation removes only what a dead process
 * left behind, never the work of a live one (the daemon and an import run
 * side by side on the same store).
 */
import { randomBytes } from 'node:crypto';
import { errnoCode } from '../../errors.js';

export function pidAlive(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return errnoCode(err) === 'EPERM';
  }
}

/** "<label>.<pid>.<random>.tmp" */
export function tempName(label: string): string {
  return `${label}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`;
}

/**
 * True for what start-up reconciliation may remove: a temp name whose process
 * is gone, or this process's own (it creates none before reconciling, so
 * those are a previous incarnation's under a reused pid), or a foreign name.
 */
export function leftBehind(name: string): boolean {
  const m = /\.(\d+)\.[a-f0-9]+\.tmp$/.exec(name);
  if (!m) return true;
  const pid = Number(m[1]);
  return pid === process.pid || !pidAlive(pid);
}
