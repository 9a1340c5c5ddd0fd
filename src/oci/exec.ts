/**
 * Exec into a running container with `runtime exec --process FILE`, the
 * runtime in the foreground: it waits for the process, reaps it (runc is a
 * child subreaper) and exits with its status; Node reaps the runtime. So an
 * exec killed at its timeout leaves no zombie behind.
 *
 * Without a tty, berth gives the runtime stdio pipes.
 *
 * With a tty (process.terminal), a foreground runc allocates the container's
 * pty itself and relays it to its own terminal, so it needs a terminal on its
 * side: plain Node cannot make one (nor receive a --console-socket fd over
 * SCM_RIGHTS). `socat` provides it: EXEC:…,pty,setsid,ctty runs the runtime
 * on a host pty that socat relays to berth's pipes. Resize sets that host
 * pty's size (`stty -F /proc/RUNTIME/fd/0`); the kernel sends the runtime
 * SIGWINCH and runc copies the size onto the container's pty. socat does not
 * pass its child's exit code on, but reports it ("child N exited with status
 * X") on stderr, which berth reads.
 */
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { FailedPreconditionError, InvalidArgumentError, NotFoundError, errnoCode } from '../errors.js';
import { run, startProcess } from '../util/run.js';
import { exitCodeOf } from '../util/spawner.js';
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
  spec.terminal = request.tty;
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
  // '-' is berth's pipes; the host pty is raw (runc makes it raw too).
  return { file: SOCAT_PATH, args: ['-', `EXEC:${command},pty,setsid,ctty,rawer`] };
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

async function readSpec(path: string, describe: string): Promise<OciSpec> {
  try {
    return JSON.parse(await readFile(path, 'utf8')) as OciSpec;
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') throw new NotFoundError(`exec in ${describe}: its bundle is gone`);
    throw err;
  }
}

/**
 * Starts an exec. The exec dir is removed when the process ends. `precheck`
 * (whether the container runs) is awaited before anything is started; the
 * spec is read and the exec dir made meanwhile.
 */
export async function startExec(
  request: ExecRequest,
  paths: ExecPaths,
  describe: string,
  precheck: Promise<void> = Promise.resolve(),
): Promise<ExecProcess> {
  if (request.args.length === 0) throw new InvalidArgumentError(`exec in ${describe}: the command is empty`);
  const prepared = await Promise.allSettled([
    precheck,
    readSpec(paths.configPath, describe),
    // Not recursive: the container's own dir must exist (a removed container's is not remade).
    mkdir(paths.dir, { mode: 0o700 }),
  ]);
  // The first failure in that order says most: not running, then no bundle, then no dir.
  const failed = prepared.find((result) => result.status === 'rejected');
  if (failed) {
    await rm(paths.dir, { recursive: true, force: true });
    throw failed.reason;
  }
  const config = (prepared[1] as PromiseFulfilledResult<OciSpec>).value;
  if (!config.process) {
    await rm(paths.dir, { recursive: true, force: true });
    throw new FailedPreconditionError(`exec in ${describe}: its spec has no process`);
  }
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
  // stdio as streams: sockets through berth-spawn (the daemon is not forked meanwhile), pipes otherwise.
  const child = startProcess({ file, args, env: process.env, streams: [0, 1, 2] });
  // With a tty, stderr is socat's (and the runtime's own) diagnostics, not the process's.
  let socatLog = '';
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
    child.kill(signal);
  };

  let pid: number;
  try {
    pid = await child.started;
  } catch (err) {
    await rm(paths.dir, { recursive: true, force: true });
    throw new FailedPreconditionError(`exec in ${describe}: cannot run ${file}: ${(err as Error).message}`);
  }
  const stdin = child.streams.get(0)!;
  const stdout = child.streams.get(1)!;
  const stderr = child.streams.get(2)!;
  let socatLogDone: Promise<unknown> = Promise.resolve();
  if (request.tty) {
    stderr.on('data', (chunk: Buffer) => {
      if (socatLog.length < 16384) socatLog += chunk.toString();
    });
    // The exit may be reported before socat's last words (its child's status) are read.
    socatLogDone = new Promise((resolve) => {
      stderr.once('close', resolve);
      stderr.once('end', resolve);
    });
  }

  const exited = child.done.then(async (end) => {
    if (timer) clearTimeout(timer);
    if (request.tty) await Promise.race([socatLogDone, new Promise((r) => setTimeout(r, 2000))]);
    let exitCode = exitCodeOf(end);
    if (request.tty && end.code !== null) exitCode = socatChildStatus(socatLog, end.code);
    // The exec dir goes in the background: its name is never reused.
    void rm(paths.dir, { recursive: true, force: true }).catch(() => undefined);
    return timedOut ? { exitCode, signal: end.signal, timedOut } : { exitCode, signal: end.signal };
  });
  exited.catch(() => undefined);

  if (request.timeoutMs && request.timeoutMs > 0) {
    timer = setTimeout(() => {
      timedOut = true;
      void killProcess('SIGKILL');
      // If the runtime itself hangs, it goes too after a grace period.
      setTimeout(() => child.kill('SIGKILL'), 2000).unref();
    }, request.timeoutMs);
  }

  return {
    stdin,
    stdout,
    stderr: request.tty ? null : stderr,
    running: () => !child.ended,
    exited,
    kill(signal: NodeJS.Signals) {
      void killProcess(signal);
    },
    resize(cols: number, rows: number) {
      if (!request.tty) return;
      void (async () => {
        // The runtime (socat's child) has the host pty as fd 0; a resize may come before it runs.
        for (let attempt = 0; attempt < 40 && !child.ended; attempt++) {
          const runtimePid = await firstChild(pid);
          if (runtimePid > 0) {
            await run(
              'stty',
              ['-F', `/proc/${runtimePid}/fd/0`, 'rows', String(rows), 'cols', String(cols)],
              {
                timeoutMs: 5000,
              },
            ).catch(() => undefined);
            return;
          }
          await new Promise((resolve) => setTimeout(resolve, 50));
        }
      })();
    },
  };
}

/** socat's exit code is its own; its child's status is in its log. */
export function socatChildStatus(log: string, socatCode: number): number {
  const status = /child \d+ exited with status (\d+)/.exec(log);
  if (status) return Number(status[1]);
  const signal = /child \d+ exited on signal (\d+)/.exec(log);
  if (signal) return 128 + Number(signal[1]);
  return socatCode;
}

async function firstChild(pid: number): Promise<number> {
  if (pid <= 0) return 0;
  try {
    const children = await readFile(`/proc/${pid}/task/${pid}/children`, 'utf8');
    return Number.parseInt(children.trim().split(/\s+/)[0] ?? '', 10) || 0;
  } catch {
    return 0;
  }
}
