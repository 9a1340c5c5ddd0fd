/**
 * Taking over an upgraded HTTP connection's reads: the socket Node's HTTP
 * server made reads every chunk into a fresh 64 KiB buffer; port-forward data
 * arriving there would cost an allocation (and its garbage) per read. The
 * connection's handle is moved into a socket of berth's own that reads into
 * one buffer, reused (Node's `onread`), as the pod side of a port-forward
 * does (netns-dial.ts).
 */
import { Socket, type SocketConstructorOpts } from 'node:net';
import { TLSSocket } from 'node:tls';
import type { Duplex } from 'node:stream';

type StreamHandle = NonNullable<SocketConstructorOpts['handle']>;
interface HandleInternals {
  readStop(): number;
  reading: boolean;
}

export interface OwnReads {
  socket: Socket;
  /** What the old socket had read and not yet handed out. */
  early: Buffer;
}

/**
 * Moves a plain TCP socket's connection into a new socket whose reads land
 * in `buffer` and go to `onBytes` (false: pause until the socket is resumed).
 * The old socket is destroyed without closing the connection. Undefined
 * (and the socket left as it was) when it cannot be done: TLS, writes still
 * queued, no handle.
 */
export function takeOverReads(
  old: Duplex,
  buffer: Buffer,
  onBytes: (bytes: Buffer) => boolean,
): OwnReads | undefined {
  if (!(old instanceof Socket) || old instanceof TLSSocket || old.writableLength > 0 || old.destroyed) {
    return undefined;
  }
  const internals = old as unknown as { _handle: (StreamHandle & Partial<HandleInternals>) | null };
  const handle = internals._handle;
  if (!handle || typeof handle.readStop !== 'function') return undefined;
  const early: Buffer[] = [];
  for (let chunk = old.read() as Buffer | null; chunk !== null; chunk = old.read() as Buffer | null) {
    early.push(chunk);
  }
  handle.readStop();
  handle.reading = false;
  internals._handle = null;
  // With no handle, destroy closes nothing: it ends the old object (and the
  // HTTP server's count of it) while the connection lives on in the new one.
  old.destroy();
  const socket = new Socket({
    handle,
    readable: true,
    writable: true,
    allowHalfOpen: true,
    onread: { buffer, callback: (n) => onBytes(buffer.subarray(0, n)) },
  });
  return { socket, early: Buffer.concat(early) };
}
