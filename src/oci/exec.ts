/**
 * Exec into a running container with `runtime exec --process FILE`.
 *
 * Without a tty, berth runs the runtime itself with stdio pipes: the runtime
 * stays in the foreground, waits for the process and exits with its status;
 * Node reaps the runtime, and the runtime (a child subreaper) reaps the process.
 *
 * With a tty the runtime wants a --console-socket to send the pty master over
 * SCM_RIGHTS, which plain Node cannot receive. berth instead has `socat`
 * allocate the pty (EXEC:…,pty,setsid,ctty): the runtime runs with
 * terminal=false and passes the pty slave through as the process's stdio;
 * socat relays the master to berth's pipes. Resize sets the window size on
 * the slave with `stty -F /proc/PID/fd/0` (the kernel then sends SIGWINCH).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { constants as osConstants } from 'node:os';
import { FailedPreconditionError, InvalidArgumentError, NotFoundError, errnoCode } from '../errors.js';
import { run } from '../util/run.js';
import { runtimeGlobalArgs } from './runtime.js';
import type { ExecProcess, ExecRequest, OciSpec } from './types.js';

export interface ExecPaths {
  /** The container's config.json (its process is the template). */
  configPath: string;
  /** A fresh directory for this exec's process.json and pid file. */
  dir: string;
}

export const SOCAT_PATH = '/usr/bin/socat';

/** Builds the exec process from the container's own process and the request. */
export function execProcessSpec(
  base: NonNullable<OciSpec['process']>,
  request: ExecRequest,
): OciSpec['process'] {
  const spec: NonNullable<OciSpec['process']> = structuredClone(base);
  spec.args = request.args;
  // The runtime gets no console socket: with a tty, socat provides the pty.
  spec.terminal = false;
  if (request.env) spec.env = request.env;
  if (request.cwd) spec.cwd = request.cwd;
  if (request.user) spec.user = { ...spec.user, ...request.user };
  if (spec.env && request.tty && !spec.env.some((e) => e.startsWith('TERM='))) spec.env.push('TERM=xterm');
  return spec;
}

/** socat splits EXEC's command line itself (no shell); keep its words plain. */
function socatWord(word: string): string {
  if (!/^[A-Za-z0-9_./=+@-]+$/.test(word)) {
    throw new InvalidArgumentError(
      `exec with a tty: argument ${JSON.stringify(word)} has characters socat cannot pass`,
    );
  }
  return word;
}

export function execArgv(
  runtimePath: string,
  globalArgs: string[],
  processFile: string,
  pidFile: string,
  id: string,
  tty: boolean,
): { file: string; args: string[] } {
  const runtimeArgv = [
    runtimePath,
    ...globalArgs,
    'exec',
    '--process',
    processFile,
    '--pid-file',
    pidFile,
    id,
  ];
  if (!tty) return { file: runtimePath, args: runtimeArgv.slice(1) };
  const command = runtimeArgv.map(socatWord).join(' ');
  // '-' is berth's pipes; raw and no echo on the pty side (like a terminal emulator).
  return { file: SOCAT_PATH, args: ['-', `EXEC:${command},pty,setsid,ctty,stderr,rawer`] };
}

async function readPidFile(path: string): Promise<number> {
  try {
    const pid = Number.parseInt((await readFile(path, 'utf8')).trim(), 10);
    return Number.isInteger(pid) && pid > 0 ? pid : 0;
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return 0;
    throw err;
  }
}

/** Starts an exec. The exec dir is removed when the process ends. */
export async function startExec(
  request: ExecRequest,
  paths: ExecPaths,
  describe: string,
): Promise<ExecProcess> {
  if (request.args.length === 0) throw new InvalidArgumentError(`exec in ${describe}: the command is empty`);
  let config: OciSpec;
  try {
    config = JSON.parse(await readFile(paths.configPath, 'utf8')) as OciSpec;
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') throw new NotFoundError(`exec in ${describe}: its bundle is gone`);
    throw err;
  }
  if (!config.process) throw new FailedPreconditionError(`exec in ${describe}: its spec has no process`);
  await mkdir(paths.dir, { recursive: true, mode: 0o700 });
  const processFile = join(paths.dir, 'process.json');
  const pidFile = join(paths.dir, 'pid');
  await writeFile(processFile, JSON.stringify(execProcessSpec(config.process, request)), { mode: 0o600 });
  const { file, args } = execArgv(
    request.handler.path,
    runtimeGlobalArgs(request.handler),
    processFile,
    pidFile,
    request.id,
    request.tty,
  );
  const child: ChildProcess = spawn(file, args, { stdio: ['pipe', 'pipe', 'pipe'] });
  const spawnError = new Promise<Error>((resolve) => child.once('error', resolve));
  let timedOut = false;
  let timer: NodeJS.Timeout | undefined;

  const killProcess = async (signal: NodeJS.Signals) => {
    const pid = await readPidFile(pidFile).catch(() => 0);
    if (pid > 0) {
      try {
        process.kill(pid, signal);
        return;
      } catch {
        // gone already
      }
    }
    // Not started yet (or already gone): stop the runtime itself.
    if (child.exitCode === null && child.signalCode === null) child.kill(signal);
  };

  const exited = new Promise<{ exitCode: number; signal: NodeJS.Signals | null; timedOut?: boolean }>(
    (resolve, reject) => {
      child.once('error', (err) => {
        if (timer) clearTimeout(timer);
        rm(paths.dir, { recursive: true, force: true }).finally(() =>
          reject(new FailedPreconditionError(`exec in ${describe}: cannot run ${file}: ${err.message}`)),
        );
      });
      child.once('exit', (code, signal) => {
        if (timer) clearTimeout(timer);
        const exitCode = code ?? (signal ? 128 + (osConstants.signals[signal] ?? 0) : -1);
        void rm(paths.dir, { recursive: true, force: true }).finally(() =>
          resolve(timedOut ? { exitCode, signal, timedOut } : { exitCode, signal }),
        );
      });
    },
  );
  exited.catch(() => undefined);

  if (request.timeoutMs && request.timeoutMs > 0) {
    timer = setTimeout(() => {
      timedOut = true;
      void killProcess('SIGKILL');
      // If the runtime itself hangs, it goes too after a grace period.
      setTimeout(() => {
        if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      }, 2000).unref();
    }, request.timeoutMs);
  }

  const ready = await Promise.race([
    spawnError,
    new Promise<undefined>((resolve) => child.once('spawn', () => resolve(undefined))),
  ]);
  if (ready instanceof Error) {
    await exited.catch(() => undefined);
    throw new FailedPreconditionError(`exec in ${describe}: cannot run ${file}: ${ready.message}`);
  }

  return {
    stdin: child.stdin,
    stdout: child.stdout,
    stderr: request.tty ? null : child.stderr,
    child,
    exited,
    kill(signal: NodeJS.Signals) {
      void killProcess(signal);
    },
    resize(cols: number, rows: number) {
      if (!request.tty) return;
      void (async () => {
        const pid = await readPidFile(pidFile).catch(() => 0);
        if (pid <= 0) return;
        // The process's fd 0 is the pty slave; setting its size notifies the process.
        await run('stty', ['-F', `/proc/${pid}/fd/0`, 'rows', String(rows), 'cols', String(cols)], {
          timeoutMs: 5000,
        }).catch(() => undefined);
      })();
    },
  };
}
