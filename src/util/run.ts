import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { nativeHelper } from './native.js';
import { Spawner } from './spawner.js';

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

/** The shared berth-spawn helper; null when it was not built (Node's spawn then). */
export function sharedSpawner(): Spawner | null {
  if (spawner === undefined) {
    const path = nativeHelper('berth-spawn');
    spawner = existsSync(path) ? new Spawner(path) : null;
  }
  return spawner;
}

/** Tests run both paths: false forces Node's spawn, true goes back to looking for the helper. */
export function useSpawnHelper(use: boolean): void {
  spawner?.close();
  spawner = use ? undefined : null;
}

export async function run(
  file: string,
  args: readonly string[],
  options: RunOptions = {},
): Promise<RunResult> {
  const maxBytes = options.maxOutputBytes ?? 16 * 1024 * 1024;
  const helper = sharedSpawner();
  if (helper) {
    const outcome = await helper.run({
      file,
      args,
      env: options.env ?? process.env,
      cwd: options.cwd,
      input: options.input,
      timeoutMs: options.timeoutMs,
      maxOutputBytes: maxBytes,
    });
    return {
      code: outcome.code,
      signal: outcome.signal,
      stdout: outcome.stdout.toString('utf8'),
      stderr: outcome.stderr.toString('utf8'),
      timedOut: outcome.timedOut,
    };
  }
  return runWithNode(file, args, options, maxBytes);
}

function runWithNode(
  file: string,
  args: readonly string[],
  options: RunOptions,
  maxBytes: number,
): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, {
      cwd: options.cwd,
      env: options.env ?? process.env,
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let outBytes = 0;
    let errBytes = 0;
    child.stdout!.on('data', (chunk: Buffer) => {
      if (outBytes < maxBytes) out.push(chunk.subarray(0, maxBytes - outBytes));
      outBytes += chunk.length;
    });
    child.stderr!.on('data', (chunk: Buffer) => {
      if (errBytes < maxBytes) err.push(chunk.subarray(0, maxBytes - errBytes));
      errBytes += chunk.length;
    });
    let timer: NodeJS.Timeout | undefined;
    let timedOut = false;
    if (options.timeoutMs !== undefined) {
      timer = setTimeout(() => {
        timedOut = true;
        child.kill('SIGKILL');
      }, options.timeoutMs);
    }
    child.on('error', (e) => {
      if (timer) clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code, signal) => {
      if (timer) clearTimeout(timer);
      resolve({
        code,
        signal,
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8'),
        timedOut,
      });
    });
    child.stdin!.on('error', () => undefined);
    child.stdin!.end(options.input ?? '');
  });
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
