/**
 * Runs inside a pod's network namespace (started by netns-dial.ts through
 * nsenter, with an IPC channel): for each {id, port} it connects to
 * 127.0.0.1:port and sends the connected socket's handle back, or the error.
 */
import { connect } from 'node:net';
import { getSystemErrorMessage } from 'node:util';
import type { SendHandle } from 'node:child_process';

interface DialRequest {
  id: number;
  port: number;
}

if (!process.send) {
  process.stderr.write('netns-dialer: needs an IPC channel\n');
  process.exit(2);
}

process.on('message', (request: DialRequest) => {
  const socket = connect({ port: request.port, host: '127.0.0.1' });
  // Never read here: a port that speaks first (a MySQL or SSH greeting, a
  // close) would have its bytes consumed by this copy, which is closed once
  // the handle is passed. Sends queue while an earlier handle awaits its ack,
  // and a queued socket would otherwise start reading as soon as it connects.
  socket.pause();
  socket.once('connect', () => {
    // The bare handle, not the socket: berth builds its own socket around it,
    // one that reads into a buffer of its own (see netns-dial.ts). This copy
    // is closed once the handle has left.
    // (Node sends bare TCP handles too; its types list only the wrappers.)
    const handle = (socket as unknown as { _handle: SendHandle })._handle;
    process.send!({ id: request.id }, handle, () => socket.destroy());
  });
  socket.once('error', (err: NodeJS.ErrnoException) => {
    process.send!({ id: request.id, error: `connect to 127.0.0.1:${request.port}: ${describe(err)}` });
  });
});
/** strerror's wording ("Connection refused"), as kubectl users know it from other runtimes. */
function describe(err: NodeJS.ErrnoException): string {
  if (typeof err.errno !== 'number') return err.message;
  const text = getSystemErrorMessage(err.errno);
  return text.charAt(0).toUpperCase() + text.slice(1);
}

process.on('disconnect', () => process.exit(0));
