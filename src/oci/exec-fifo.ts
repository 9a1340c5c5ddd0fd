/**
 * Starting a runc container without a second runc process.
 *
 * `runc create` leaves the container's init blocked opening
 * `<root>/<id>/exec.fifo` for writing; `runc start` only opens that fifo for
 * reading, reads what init writes, and removes the fifo (runc reports a live
 * init with a fifo as "created", without one as "running"). Doing those three
 * steps here saves a Go process start per container (25–30 ms on a small
 * node, twice per pod). Anything unexpected falls back to `runc start`, whose
 * own error text then says what is wrong.
 */
import { lstat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { runtimeKind } from './runtime-kind.js';
import { processAlive } from '../../conmon/launch.js';
import { errnoCode } from '../errors.js';
import { openFifoForReading, readFifoToEnd } from '../util/fifo.js';
import type { RuntimeHandler } from './types.js';

/** The fifo handshake is instant; past this something is wrong, so ask runc. */
const HANDSHAKE_TIMEOUT_MS = 10_000;

/** Only runc's own state layout is known; other runtimes always get `start`. */
export function usesRuncExecFifo(handler: RuntimeHandler): boolean {
  return (
    handler.type === 'oci' &&
    runtimeKind(handler) === 'runc' &&
    !(handler.runtimeArgs ?? []).some((arg) => arg === '--root' || arg.startsWith('--root='))
  );
}

export function execFifoPath(handler: RuntimeHandler, id: string): string {
  return join(handler.root, id, 'exec.fifo');
}

/**
 * Releases a created runc container's init. Resolves true when it did, false
 * when the caller should run `runc start` instead (no fifo, init gone, no
 * byte from init); never leaves the fifo half-consumed with init running.
 */
export async function startThroughExecFifo(
  handler: RuntimeHandler,
  id: string,
  initPid: number,
): Promise<boolean> {
  const path = execFifoPath(handler, id);
  try {
    if (!(await lstat(path)).isFIFO()) return false;
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return false; // started already, or not runc's layout
    throw err;
  }
  if (!(await processAlive(initPid))) return false;
  let fd: number;
  try {
    fd = await openFifoForReading(path);
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return false;
    throw err;
  }
  // init writes one byte and then execs, closing its end: end of file.
  const received = (await readFifoToEnd(fd, initPid, HANDSHAKE_TIMEOUT_MS)).length;
  if (received === 0) return false;
  await unlink(path).catch((err: unknown) => {
    if (errnoCode(err) !== 'ENOENT') throw err;
  });
  return true;
}
