import { existsSync } from 'node:fs';
import { nativeHelper } from './native.js';
import { spawnWithNode } from './node-spawn.js';
import { Spawner, type AdoptedExitListener, type SpawnedProcess, type SpawnRequest } from './spawner.js';

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** Killed because timeoutMs ran out. */
  timedOut: boolean;
}

export interface RunOptions {
  input?: string | Uint8Array;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  timeoutMs?: number;
  /** Cap on captured bytes per stream; the rest is discarded. */
  maxOutputBytes?: number;
}

/** A process that failed; carries the command and what it printed. */
export class CommandError extends Error {
  readonly result: RunResult;
  readonly argv: readonly string[];
  constructor(argv: readonly string[], result: RunResult) {
    const why = result.signal ? `killed by ${result.signal}` : `exited with ${result.code}`;
    const detail = (result.stderr.trim() || result.stdout.trim()).slice(0, 2000);
    super(`${argv[0]} ${argv.slice(1, 3).join(' ')} ${why}${detail ? `: ${detail}` : ''}`);
    this.result = result;
    this.argv = argv;
  }
}

/**
 * Runs a program with an argument array (never a shell) and captures its
 * output. Resolves with the result whatever the exit code.
 */
let spawner: Spawner | null | undefined;

const adoptedExitListeners: AdoptedExitListener[] = [];

/** The shared berth-spawn helper; null when it was not built (Node's spawn then). */
function sharedSpawner(): Spawner | null {
  if (spawner === undefined) {
    const path = nativeHelper('berth-spawn');
    spawner = existsSync(path) ? new Spawner(path) : null;
    spawner?.onAdoptedExit((pid, end) => {
      for (const listener of adoptedExitListeners) listener(pid, end);
    });
  }
  return spawner;
}

/**
 * Calls listener when a process that berth's programs left behind ends: a
 * conmon after it daemonized, or a container whose conmon died (berth-spawn
 * is their subreaper). Without the helper (Node's spawn) they go to PID 1 and
 * nothing is reported.
 */
export function onAdoptedExit(listener: AdoptedExitListener): void {
  adoptedExitListeners.push(listener);
}

/** Tests run both paths: false forces Node's spawn, true goes back to looking for the helper. */
export function useSpawnHelper(use: boolean): void {
  spawner?.close();
  spawner = use ? undefined : null;
}

/**
 * Starts the berth-spawn helper now. The daemon calls it at start-up, while
 * its heap is small: starting the helper is the one fork of the daemon, and
 * left to the first program berth runs it held the event loop for tens of ms in the
 * middle of a first pull or pod.
 */
export function prestartSpawnHelper(): void {
  sharedSpawner()?.prestart();
}

/** Starts a program through berth-spawn, or through Node's spawn when the helper was not built. */
export function startProcess(request: SpawnRequest): SpawnedProcess {
  return sharedSpawner()?.start(request) ?? spawnWithNode(request);
}

export async function run(
  file: string,
  args: readonly string[],
  options: RunOptions = {},
): Promise<RunResult> {
  const spawned = startProcess({
    file,
    args,
    env: options.env ?? process.env,
    cwd: options.cwd,
    input: options.input,
    timeoutMs: options.timeoutMs,
    maxOutputBytes: options.maxOutputBytes,
  });
  spawned.started.catch(() => undefined); // done rejects the same way
  const outcome = await spawned.done;
  return {
    code: outcome.code,
    signal: outcome.signal,
    stdout: outcome.stdout.toString('utf8'),
    stderr: outcome.stderr.toString('utf8'),
    timedOut: outcome.timedOut,
  };
}

/** Like run, but rejects with CommandError unless the exit code is 0. */
export async function runChecked(
  file: string,
  args: readonly string[],
  options: RunOptions = {},
): Promise<RunResult> {
  const result = await run(file, args, options);
  if (result.code !== 0) throw new CommandError([file, ...args], result);
  return result;
}
