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
import { constants, open as openCallback } from 'node:fs';
import { lstat, unlink } from 'node:fs/promises';
import { promisify } from 'node:util';
import { Socket } from 'node:net';
import { basename, join } from 'node:path';
import { processAlive } from '../../conmon/launch.js';
import { errnoCode } from '../errors.js';
import type { RuntimeHandler } from './types.js';

const openFd = promisify(openCallback);

/** How often the init's liveness is checked while waiting for it to write. */
const INIT_POLL_MS = 100;
/** The fifo handshake is instant; past this something is wrong, so ask runc. */
const HANDSHAKE_TIMEOUT_MS = 10_000;

/** Only runc's own state layout is known; other runtimes always get `start`. */
export function usesRuncExecFifo(handler: RuntimeHandler): boolean {
  return (
    handler.type === 'oci' &&
    basename(handler.path) === 'runc' &&
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
    // Non-blocking: a plain open would park a libuv thread until init opens its end.
    // A raw fd, not a FileHandle: the socket below owns and closes it.
    fd = await openFd(path, constants.O_RDONLY | constants.O_NONBLOCK);
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return false;
    throw err;
  }
  const received = await new Promise<number>((resolve) => {
    const pipe = new Socket({ fd, readable: true, writable: false });
    let bytes = 0;
    let settled = false;
    const finish = (value: number) => {
      if (settled) return;
      settled = true;
      clearInterval(watch);
      clearTimeout(deadline);
      pipe.destroy();
      resolve(value);
    };
    // init writes one byte and then execs, closing its end: end of file.
    pipe.on('data', (chunk: Buffer) => (bytes += chunk.length));
    pipe.on('end', () => finish(bytes));
    pipe.on('error', () => finish(0));
    const watch = setInterval(() => {
      void processAlive(initPid).then((alive) => {
        if (!alive) finish(bytes);
      });
    }, INIT_POLL_MS);
    const deadline = setTimeout(() => finish(bytes), HANDSHAKE_TIMEOUT_MS);
  });
  if (received === 0) return false;
  await unlink(path).catch((err: unknown) => {
    if (errnoCode(err) !== 'ENOENT') throw err;
  });
  return true;
}
