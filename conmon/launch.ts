/**
 * Starts conmon for one container the way CRI-O does: conmon double-forks
 * into its own session (so it outlives berth), runs `runtime create`, and
 * reports the container pid (or the runtime's error) on the sync pipe.
 */
import { readFile } from 'node:fs/promises';
import { errnoCode } from '../src/errors.js';
import { startProcess } from '../src/util/run.js';
import { readSyncMessage, type SyncMessage } from './sync-pipe.js';
import { conmonPidFile, containerPidFile, persistDir, socketDir, type ConmonLayout } from './layout.js';

export interface ConmonCreateOptions {
  conmonPath: string;
  layout: ConmonLayout;
  id: string;
  /** Container name for conmon's logs (-n). */
  name?: string;
  runtimePath: string;
  /** Global runtime flags (--root=…, handler extras), passed as --runtime-arg. */
  runtimeArgs: string[];
  bundleDir: string;
  /** k8s-file log path; empty disables logging. */
  logPath: string;
  stdin: boolean;
  stdinOnce: boolean;
  tty: boolean;
  systemdCgroup: boolean;
  logLevel?: 'debug' | 'info' | 'warn' | 'error';
  /** Called with the first conmon pid while conmon waits on the start pipe (move it into a cgroup). */
  beforeStart?: (pid: number) => Promise<void>;
  timeoutMs?: number;
}

export interface ConmonCreateResult {
  /** Container init pid. */
  pid: number;
  /** The long-lived conmon's pid (0 if its pid file could not be read). */
  conmonPid: number;
}

/** conmon's command line for `runtime create`. */
export function conmonCreateArgs(options: ConmonCreateOptions): string[] {
  const { layout, id } = options;
  const args = [
    '--api-version',
    '1',
    '--cid',
    id,
    '--cuuid',
    id,
    '--name',
    options.name ?? id,
    '--runtime',
    options.runtimePath,
    '--bundle',
    options.bundleDir,
    '--container-pidfile',
    containerPidFile(layout, id),
    '--conmon-pidfile',
    conmonPidFile(layout, id),
    '--log-path',
    options.logPath ? `k8s-file:${options.logPath}` : 'none',
    '--exit-dir',
    layout.exitDir,
    '--persist-dir',
    persistDir(layout, id),
    '--socket-dir-path',
    socketDir(layout),
    '--log-level',
    options.logLevel ?? 'info',
  ];
  for (const arg of options.runtimeArgs) args.push('--runtime-arg', arg);
  if (options.systemdCgroup) args.push('--systemd-cgroup');
  if (options.stdin) args.push('--stdin');
  if (options.stdin && !options.stdinOnce) args.push('--leave-stdin-open');
  if (options.tty) args.push('--terminal');
  return args;
}

/** A conmon failure: carries the runtime's (or conmon's) own words. */
export class ConmonError extends Error {
  constructor(
    message: string,
    readonly runtimeMessage: string,
  ) {
    super(message);
  }
}

/**
 * Runs conmon for a create and waits for the container pid. Rejects with a
 * ConmonError carrying the runtime's error text when the create fails.
 */
export async function conmonCreate(options: ConmonCreateOptions): Promise<ConmonCreateResult> {
  const { layout, id } = options;
  const child = startProcess({
    file: options.conmonPath,
    args: conmonCreateArgs(options),
    cwd: persistDir(layout, id), // conmon also drops an `oom` file in its cwd
    env: {
      PATH: process.env.PATH ?? '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
      _OCI_SYNCPIPE: '3',
      _OCI_STARTPIPE: '4',
    },
    // stderr, sync and start pipe (sockets through berth-spawn, else pipes)
    streams: [2, 3, 4],
    discardStdio: true,
    newSession: true, // a signal to berth's process group must not reach conmon
  });
  // The first conmon exits right after forking the monitor.
  const firstExit = child.done.then(
    (outcome) => outcome.code,
    () => null,
  );
  const pid = await child.started;
  const stderr = child.streams.get(2)!;
  const syncPipe = child.streams.get(3)!;
  const startPipe = child.streams.get(4)!;
  let stderrText = '';
  stderr.on('data', (chunk: Buffer) => {
    if (stderrText.length < 8192) stderrText += chunk.toString();
  });
  for (const stream of [stderr, syncPipe, startPipe]) stream.on('error', () => undefined);
  const timeout = AbortSignal.timeout(options.timeoutMs ?? 120_000);
  try {
    if (options.beforeStart) await options.beforeStart(pid);
    startPipe.end('0');
    let message: SyncMessage;
    try {
      message = await readSyncMessage(syncPipe, timeout);
    } catch (err) {
      const code = await Promise.race([firstExit, new Promise((r) => setTimeout(() => r('running'), 200))]);
      const detail = stderrText.trim() || (err as Error).message;
      throw new ConmonError(
        timeout.aborted
          ? `conmon did not report the container pid within ${(options.timeoutMs ?? 120_000) / 1000}s`
          : `conmon failed (first process exit ${String(code)}): ${detail}`,
        detail,
      );
    }
    if (message.data <= 0) {
      const why = (message.message ?? '').trim() || stderrText.trim() || 'the runtime reported no error text';
      throw new ConmonError(`runtime create failed: ${why}`, why);
    }
    const conmonPid = await readPid(conmonPidFile(layout, id));
    return { pid: message.data, conmonPid };
  } catch (err) {
    // The monitor may still run (timeout): stop it so nothing is half-made.
    const conmonPid = await readPid(conmonPidFile(layout, id));
    if (conmonPid > 0) killQuietly(conmonPid, 'SIGKILL');
    child.kill('SIGKILL');
    throw err;
  } finally {
    for (const stream of [stderr, syncPipe, startPipe]) stream.destroy();
  }
}

/** Reads a pid file; 0 when missing or unparsable. */
export async function readPid(path: string): Promise<number> {
  try {
    const pid = Number.parseInt((await readFile(path, 'utf8')).trim(), 10);
    return Number.isInteger(pid) && pid > 0 ? pid : 0;
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return 0;
    throw err;
  }
}

export function killQuietly(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch {
    // already gone
  }
}

/** True when pid is alive and not a zombie. */
export async function processAlive(pid: number): Promise<boolean> {
  if (pid <= 0) return false;
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    // state is the field after the parenthesised command name
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state !== 'Z' && state !== 'X';
  } catch {
    return false;
  }
}
