/**
 * Exec and attach, independent of the wire protocol: a protocol adapter
 * (SPDY or WebSocket) hands over the client's streams as CommandStreams; this
 * module connects them to the process (or to conmon's attach socket) and
 * reports the outcome.
 */
import type { Readable, Writable } from 'node:stream';
import type { Logger } from '../log.js';
import { errorMessage } from '../errors.js';
import type { Outcome } from './status.js';
import type { AttachTarget, ExecTarget, TerminalSize } from './types.js';
import { openAttach } from './attach.js';

export interface CommandStreams {
  stdin: Readable | null;
  stdout: Writable | null;
  stderr: Writable | null;
  onResize(listener: (size: TerminalSize) => void): void;
  /** Ends stdout/stderr, reports the outcome on the error stream and closes the connection. */
  finish(outcome: Outcome): Promise<void>;
  /** Resolves when the client goes away (connection closed). */
  closed: Promise<void>;
}

/**
 * Copies src into dst without ending dst; resolves when src ends. If dst goes
 * away, src is drained so the producer (a process) never blocks on it.
 */
export function forward(src: Readable, dst: Writable | null): Promise<void> {
  return new Promise((resolve) => {
    const done = () => resolve();
    src.once('end', done);
    src.once('close', done);
    src.once('error', done);
    if (!dst || dst.destroyed || dst.writableEnded) {
      src.resume();
      return;
    }
    src.pipe(dst, { end: false });
    const detach = () => {
      src.unpipe(dst);
      src.resume();
    };
    dst.once('close', detach);
    dst.once('error', detach);
  });
}

function ignoreErrors(stream: NodeJS.WritableStream | NodeJS.ReadableStream | null): void {
  (stream as unknown as Readable | null)?.on?.('error', () => undefined);
}

export interface ExecOptions {
  cmd: string[];
  tty: boolean;
  stdin: boolean;
}

/** Runs one exec session to its end; never throws. */
export async function runExec(
  target: ExecTarget,
  options: ExecOptions,
  streams: CommandStreams,
  log: Logger,
): Promise<Outcome> {
  let outcome: Outcome;
  try {
    const proc = await target.start(options.cmd, options.tty);
    ignoreErrors(proc.stdin);
    ignoreErrors(proc.stdout);
    ignoreErrors(proc.stderr);
    const stdin = proc.stdin as Writable | null;
    if (options.stdin && streams.stdin && stdin) {
      const input = streams.stdin;
      input.on('error', () => undefined);
      input.pipe(stdin);
      // The process closed its stdin or ended: what the client still sends is dropped,
      // not left to fill the pipe and stall the connection (resizes, the client's close).
      const discard = () => {
        input.unpipe(stdin);
        input.resume();
      };
      stdin.once('error', discard);
      stdin.once('close', discard);
    } else {
      stdin?.end();
    }
    streams.onResize((size) => {
      log.trace({ width: size.width, height: size.height }, 'terminal resize');
      proc.resize(size.width, size.height);
    });
    // A client that disconnects takes its process with it.
    void streams.closed.then(() => {
      if (proc.running()) proc.kill('SIGKILL');
    });
    const copies = [
      proc.stdout ? forward(proc.stdout as Readable, streams.stdout) : Promise.resolve(),
      proc.stderr ? forward(proc.stderr as Readable, streams.stderr) : Promise.resolve(),
    ];
    const exit = await proc.exited;
    await Promise.all(copies);
    outcome = { kind: 'exit', exitCode: exit.exitCode };
  } catch (err) {
    outcome = { kind: 'error', message: errorMessage(err) };
    log.debug({ err: errorMessage(err) }, 'exec failed');
  }
  await streams.finish(outcome);
  return outcome;
}

export interface AttachOptions {
  stdin: boolean;
  tty: boolean;
}

/** Attaches to a container's stdio through conmon until it exits or the client leaves. */
export async function runAttach(
  target: AttachTarget,
  options: AttachOptions,
  streams: CommandStreams,
  log: Logger,
): Promise<Outcome> {
  let outcome: Outcome;
  try {
    const attach = await openAttach(target.socketPath, target.ctlPath);
    streams.onResize((size) => {
      log.trace({ width: size.width, height: size.height }, 'terminal resize');
      attach.resize(size.width, size.height);
    });
    const output = attach.pump(streams.stdout, options.tty ? streams.stdout : streams.stderr);
    let stdinDone: Promise<'stdin-closed'> = new Promise(() => undefined);
    if (options.stdin && streams.stdin) {
      const stdin = streams.stdin;
      stdinDone = new Promise((resolve) => {
        stdin.on('data', (chunk: Buffer) => attach.write(chunk));
        stdin.once('end', () => resolve('stdin-closed'));
        stdin.once('error', () => resolve('stdin-closed'));
      });
    }
    const first = await Promise.race([
      output.then(() => 'output-ended' as const),
      stdinDone,
      streams.closed.then(() => 'client-gone' as const),
    ]);
    if (first === 'stdin-closed') {
      // conmon closes the container's stdin on this only for stdin_once containers.
      attach.closeStdin();
      if (target.stdinOnce) await Promise.race([output, streams.closed]);
    }
    attach.close();
    outcome = { kind: 'exit', exitCode: 0 };
  } catch (err) {
    outcome = { kind: 'error', message: errorMessage(err) };
    log.debug({ err: errorMessage(err) }, 'attach failed');
  }
  await streams.finish(outcome);
  return outcome;
}
