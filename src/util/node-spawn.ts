/**
 * SpawnedProcess through Node's child_process, for when native/berth-spawn
 * was not built: the same contract as Spawner.start, with pipes where the
 * helper gives sockets. Forks the daemon and holds the event loop per spawn.
 */
import { spawn, type StdioOptions } from 'node:child_process';
import type { Socket } from 'node:net';
import type { Readable } from 'node:stream';
import { DEFAULT_MAX_OUTPUT, type SpawnedProcess, type SpawnOutcome, type SpawnRequest } from './spawner.js';

/** Collects a captured output up to `max` bytes; resolves when it closes. */
function capture(stream: Readable | null, max: number): { bytes: () => Buffer; closed: Promise<void> } {
  const chunks: Buffer[] = [];
  let kept = 0;
  stream?.on('data', (chunk: Buffer) => {
    if (kept < max) chunks.push(chunk.subarray(0, max - kept));
    kept += chunk.length;
  });
  const closed = stream
    ? new Promise<void>((resolve) => stream.once('close', () => resolve()))
    : Promise.resolve();
  return { bytes: () => Buffer.concat(chunks), closed };
}

export function spawnWithNode(request: SpawnRequest): SpawnedProcess {
  const streamFds = new Set(request.streams ?? []);
  const lastFd = Math.max(2, ...streamFds);
  const stdio: StdioOptions = Array.from({ length: lastFd + 1 }, (_, fd) =>
    streamFds.has(fd) || (fd < 3 && !request.discardStdio) ? 'pipe' : 'ignore',
  );
  const child = spawn(request.file, [...request.args], {
    cwd: request.cwd,
    env: request.env,
    stdio,
    detached: request.newSession ?? false,
  });
  const streams = new Map<number, Socket>();
  for (const fd of streamFds) streams.set(fd, child.stdio[fd] as Socket);
  const captured = (fd: number) =>
    streamFds.has(fd) || request.discardStdio ? null : (child.stdio[fd] as Readable | null);
  const max = request.maxOutputBytes ?? DEFAULT_MAX_OUTPUT;
  const stdout = capture(captured(1), max);
  const stderr = capture(captured(2), max);
  const stdin = streamFds.has(0) || request.discardStdio ? null : child.stdin;
  stdin?.on('error', () => undefined);
  stdin?.end(request.input ?? '');

  let timedOut = false;
  const timer =
    request.timeoutMs && request.timeoutMs > 0
      ? setTimeout(() => {
          timedOut = true;
          child.kill('SIGKILL');
        }, request.timeoutMs)
      : undefined;
  let ended = false;
  const failed = new Promise<never>((_, reject) =>
    child.once('error', (err) => {
      ended = true;
      reject(err);
    }),
  );
  failed.catch(() => undefined);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => {
      ended = true;
      resolve({ code, signal });
    }),
  );
  // As the helper does: done once it has ended and its captured outputs are closed (streams are the caller's).
  const done: Promise<SpawnOutcome> = Promise.race([
    failed,
    Promise.all([exited, stdout.closed, stderr.closed]).then(([end]) => ({
      ...end,
      stdout: stdout.bytes(),
      stderr: stderr.bytes(),
      timedOut,
    })),
  ]).finally(() => clearTimeout(timer));
  const started = Promise.race([
    failed,
    new Promise<number>((resolve) => child.once('spawn', () => resolve(child.pid ?? 0))),
  ]);
  started.catch(() => {
    for (const socket of streams.values()) socket.destroy();
  });
  return {
    started,
    streams,
    done,
    get ended() {
      return ended;
    },
    kill(signal) {
      if (!ended) child.kill(signal);
    },
  };
}
