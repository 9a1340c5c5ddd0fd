import { connect } from 'node:net';
import { chmod, lstat, mkdir, unlink } from 'node:fs/promises';
import { dirname } from 'node:path';
import { errnoCode } from '../errors.js';

/** True when something accepts connections on the unix socket at path. */
export function socketInUse(path: string, timeoutMs = 1000): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ path });
    const timer = setTimeout(() => {
      socket.destroy();
      resolve(true);
    }, timeoutMs);
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => {
      clearTimeout(timer);
      resolve(false);
    });
  });
}

export class SocketBusyError extends Error {}

/**
 * Makes the socket path ready for bind: creates a missing parent 0700,
 * refuses when another server answers on it, and removes a stale file.
 */
export async function prepareSocketPath(path: string): Promise<void> {
  await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  let exists = true;
  try {
    const stat = await lstat(path);
    if (!stat.isSocket()) {
      throw new SocketBusyError(
        `${path} exists and is not a socket; remove it or choose another server.socket`,
      );
    }
  } catch (err) {
    if (errnoCode(err) !== 'ENOENT') throw err;
    exists = false;
  }
  if (!exists) return;
  if (await socketInUse(path)) {
    throw new SocketBusyError(
      `another server is already listening on ${path}; is berth running? (stop it first)`,
    );
  }
  await unlink(path);
}

export async function restrictSocket(path: string): Promise<void> {
  await chmod(path, 0o660);
}
