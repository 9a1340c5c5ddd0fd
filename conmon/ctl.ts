/**
 * conmon's control fifo (`ctl` in the bundle): lines "TYPE HEIGHT WIDTH\n";
 * type 1 resizes the terminal, type 2 reopens the log file (conmon opens
 * LOG.tmp, truncating, and renames it over LOG).
 */
import { constants } from 'node:fs';
import { open, stat } from 'node:fs/promises';
import { errnoCode } from '../src/errors.js';

export const WIN_RESIZE_EVENT = 1;
export const REOPEN_LOGS_EVENT = 2;

export function ctlMessage(type: number, height = 0, width = 0): string {
  return `${type} ${height} ${width}\n`;
}

/** Writes one control message. Non-blocking open: ENXIO means no conmon reads the fifo. */
export async function writeCtl(fifoPath: string, message: string): Promise<void> {
  const handle = await open(fifoPath, constants.O_WRONLY | constants.O_NONBLOCK);
  try {
    await handle.write(message);
  } finally {
    await handle.close();
  }
}

async function inode(path: string): Promise<bigint | undefined> {
  try {
    return (await stat(path, { bigint: true })).ino;
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return undefined;
    throw err;
  }
}

/**
 * Asks conmon to reopen the log and waits until the file at logPath is a new
 * one (a different inode), so the caller may rely on it afterwards.
 */
export async function reopenLogThroughCtl(
  fifoPath: string,
  logPath: string,
  timeoutMs = 5000,
): Promise<void> {
  const before = await inode(logPath);
  await writeCtl(fifoPath, ctlMessage(REOPEN_LOGS_EVENT));
  const deadline = Date.now() + timeoutMs;
  let delay = 2;
  while (Date.now() < deadline) {
    const now = await inode(logPath);
    if (now !== undefined && now !== before) return;
    await new Promise((resolve) => setTimeout(resolve, delay));
    delay = Math.min(delay * 2, 100);
  }
  throw new Error(`conmon did not reopen ${logPath} within ${timeoutMs} ms`);
}
