/**
 * remotecommand over SPDY (v5/v4/v3/v2.channel.k8s.io and channel.k8s.io):
 * the client opens one stream per requested stdio stream plus the error
 * stream (and, with a tty from v3 on, the resize stream), each naming itself
 * in the `streamType` header. Protocol v4 and later report the outcome as a
 * JSON Status; v5 over SPDY is v4 (its close signal is WebSocket-only); v1
 * closes berth's side of stdin at once, as kubelet does.
 */
import { once } from 'node:events';
import type { SpdyConnection, SpdyStream } from './spdy/connection.js';
import type { CommandStreams } from './command.js';
import { ResizeDecoder, ResizeEvents } from './resize.js';
import { encodeOutcome, type Outcome } from './status.js';

export const SPDY_COMMAND_PROTOCOLS = [
  'v5.channel.k8s.io',
  'v4.channel.k8s.io',
  'v3.channel.k8s.io',
  'v2.channel.k8s.io',
  'channel.k8s.io',
];

export interface StreamChoice {
  stdin: boolean;
  stdout: boolean;
  stderr: boolean;
  tty: boolean;
}

function version(protocol: string): number {
  const match = /^v(\d+)\.channel\.k8s\.io$/.exec(protocol);
  return match ? Number(match[1]) : 1;
}

/** Ends a writable and waits (bounded) until its end has been handed to the socket. */
async function endAndWait(stream: SpdyStream | null, timeoutMs = 5000): Promise<void> {
  if (!stream || stream.destroyed) return;
  if (!stream.writableFinished) {
    const finished = once(stream, 'finish').catch(() => undefined);
    stream.end();
    await Promise.race([finished, new Promise((resolve) => setTimeout(resolve, timeoutMs).unref())]);
  }
}

/** Waits for the client's streams; rejects (and closes the connection) on timeout. */
export function spdyCommandStreams(
  conn: SpdyConnection,
  protocol: string,
  choice: StreamChoice,
  creationTimeoutMs: number,
): Promise<CommandStreams> {
  const v = version(protocol);
  const resizable = choice.tty && v >= 3;
  const expected =
    1 + Number(choice.stdin) + Number(choice.stdout) + Number(choice.stderr) + Number(resizable);
  const byType = new Map<string, SpdyStream>();
  const closed = new Promise<void>((resolve) => {
    if (conn.closed) resolve();
    conn.once('close', () => resolve());
  });

  return new Promise((resolve, reject) => {
    let received = 0;
    const timer = setTimeout(() => {
      conn.off('stream', onStream);
      conn.close();
      reject(new Error(`timed out waiting for the client to create ${expected} streams (got ${received})`));
    }, creationTimeoutMs);
    timer.unref();
    const onStream = (stream: SpdyStream) => {
      const type = stream.header('streamtype') ?? '';
      if (!['error', 'stdin', 'stdout', 'stderr', 'resize'].includes(type) || byType.has(type)) {
        stream.reset();
        return;
      }
      byType.set(type, stream);
      stream.on('error', () => undefined);
      if (++received < expected) return;
      clearTimeout(timer);
      conn.off('stream', onStream);
      resolve(build());
    };
    conn.on('stream', onStream);
    void closed.then(() => {
      clearTimeout(timer);
      if (received < expected)
        reject(new Error('the client closed the connection before creating its streams'));
    });
  });

  function build(): CommandStreams {
    const stdin = byType.get('stdin') ?? null;
    const stdout = byType.get('stdout') ?? null;
    const stderr = byType.get('stderr') ?? null;
    const error = byType.get('error') ?? null;
    const resize = byType.get('resize') ?? null;
    // Nothing is read from these; keep them flowing so they never hold the connection.
    error?.resume();
    stdout?.resume();
    stderr?.resume();
    if (v === 1) stdin?.end();
    const resizes = new ResizeEvents();
    if (resize) {
      const decoder = new ResizeDecoder();
      resize.on('data', (chunk: Buffer) => {
        for (const size of decoder.push(chunk)) resizes.emit(size);
      });
    }
    return {
      stdin: choice.stdin ? stdin : null,
      stdout: choice.stdout ? stdout : null,
      stderr: choice.stderr ? stderr : null,
      onResize: (listener) => resizes.listen(listener),
      closed: new Promise<void>((resolve) => {
        if (conn.closed) resolve();
        conn.once('close', () => resolve());
      }),
      async finish(outcome: Outcome) {
        await Promise.all([endAndWait(stdout), endAndWait(stderr)]);
        if (error && !error.destroyed) {
          const bytes = encodeOutcome(outcome, v >= 4);
          if (bytes.length > 0) error.write(bytes);
          await endAndWait(error);
        }
        stdin?.destroy();
        resize?.destroy();
        conn.close();
      },
    };
  }
}
