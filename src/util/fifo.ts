/**
 * Reading the handshake fifos of runtime helpers (runc's exec.fifo, the
 * runsc shim's `started`) without parking a libuv thread in a blocking open
 * or read: the fifo is opened non-blocking and read through a pipe socket.
 */
import { constants, open as openCallback } from 'node:fs';
import { Socket } from 'node:net';
import { promisify } from 'node:util';
import { processAlive } from '../../conmon/launch.js';

const openFd = promisify(openCallback);
const POLL_MS = 100;

/** Opens a fifo for reading without waiting for a writer. */
export function openFifoForReading(path: string): Promise<number> {
  return openFd(path, constants.O_RDONLY | constants.O_NONBLOCK);
}

/**
 * Everything written to the fifo (open as `fd`, which this takes over and
 * closes) until its writer closes it; what arrived so far when `writerPid`
 * dies, `timeoutMs` passes or `signal` aborts first.
 */
export function readFifoToEnd(
  fd: number,
  writerPid: number,
  timeoutMs: number,
  signal?: AbortSignal,
): Promise<Buffer> {
  return new Promise((resolve) => {
    const pipe = new Socket({ fd, readable: true, writable: false });
    const chunks: Buffer[] = [];
    let settled = false;
    const finish = () => {
      if (settled) return;
      settled = true;
      clearInterval(watch);
      clearTimeout(deadline);
      pipe.destroy();
      resolve(Buffer.concat(chunks));
    };
    pipe.on('data', (chunk: Buffer) => chunks.push(chunk));
    pipe.on('end', finish);
    pipe.on('error', finish);
    const watch = setInterval(() => {
      void processAlive(writerPid).then((alive) => {
        if (!alive) finish();
      });
    }, POLL_MS);
    const deadline = setTimeout(finish, timeoutMs);
    if (signal?.aborted) finish();
    else signal?.addEventListener('abort', finish, { once: true });
  });
}
