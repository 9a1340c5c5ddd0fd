/**
 * remotecommand over WebSocket: channels 0 stdin, 1 stdout, 2 stderr,
 * 3 error, 4 resize. Like kubelet, berth first sends an empty message on the
 * lowest channel it writes, so the client knows the session is up; at the end
 * it sends the outcome on the error channel and closes the socket.
 */
import type { Writable } from 'node:stream';
import type { CommandStreams } from './command.js';
import { ResizeDecoder, ResizeEvents } from './resize.js';
import { encodeOutcome, type Outcome } from './status.js';
import type { StreamChoice } from './spdy-command.js';
import type { ChannelSocket } from './websocket.js';

const STDIN = 0;
const STDOUT = 1;
const STDERR = 2;
const ERROR = 3;
const RESIZE = 4;

async function endWriter(writer: Writable | null): Promise<void> {
  if (!writer || writer.writableFinished) return;
  await new Promise<void>((resolve) => {
    writer.once('finish', () => resolve());
    writer.once('error', () => resolve());
    writer.end();
  });
}

export function wsCommandStreams(channels: ChannelSocket, choice: StreamChoice): CommandStreams {
  const stdout = choice.stdout ? channels.writer(STDOUT) : null;
  const stderr = choice.stderr ? channels.writer(STDERR) : null;
  const stdin = choice.stdin ? channels.reader(STDIN) : null;
  void channels.send(choice.stdout ? STDOUT : choice.stderr ? STDERR : ERROR, Buffer.alloc(0));
  const resizes = new ResizeEvents();
  const decoder = new ResizeDecoder();
  channels.reader(RESIZE).on('data', (chunk: Buffer) => {
    for (const size of decoder.push(chunk)) resizes.emit(size);
  });
  const closed = new Promise<void>((resolve) => {
    if (channels.ws.readyState >= channels.ws.CLOSING) resolve();
    channels.ws.once('close', () => resolve());
  });
  return {
    stdin,
    stdout,
    stderr,
    closed,
    onResize: (listener) => resizes.listen(listener),
    async finish(outcome: Outcome) {
      await Promise.all([endWriter(stdout), endWriter(stderr)]);
      const bytes = encodeOutcome(outcome, channels.protocol.jsonStatus);
      if (bytes.length > 0) await channels.send(ERROR, bytes);
      channels.close(1000);
    },
  };
}
