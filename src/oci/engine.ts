/**
 * The OCI engine: containers created by conmon (which runs `runtime create`
 * and stays to watch the container), driven afterwards with the runtime CLI.
 */
import { mkdir, readFile, rm, symlink, unlink } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { onAdoptedExit } from '../util/run.js';
import { exitCodeOf } from '../util/spawner.js';
import type { Logger } from '../log.js';
import { writeFileReplace } from '../util/atomic-file.js';
import {
  BerthError,
  FailedPreconditionError,
  InvalidArgumentError,
  NotFoundError,
  errnoCode,
  errorMessage,
} from '../errors.js';
import {
  assertContainerId,
  attachSocket,
  bundleLink,
  conmonPidFile,
  containerPidFile,
  ctlFifo,
  exitFile,
  persistDir,
  socketDir,
  type ConmonLayout,
} from '../../conmon/layout.js';
import { ConmonError, conmonCreate, processAlive, readPid } from '../../conmon/launch.js';
import { ExitWatcher, readExit } from '../../conmon/exits.js';
import { reopenLogThroughCtl } from '../../conmon/ctl.js';
import { moveToCgroup, type CgroupDriver } from './cgroup-driver.js';
import { startExec } from './exec.js';
import { startThroughExecFifo, usesRuncExecFifo } from './exec-fifo.js';
import {
  conmonRuntime,
  isRunsc,
  removeStaleRunscLocks,
  shimAwaitsStart,
  startThroughShim,
} from './runsc-shim.js';
import { runtimeDelete, runtimeKill, runtimeStart, runtimeState, runtimeUpdate } from './runtime.js';
import type {
  CreateRequest,
  ExecProcess,
  ExecRequest,
  ExitInfo,
  OciEngine,
  RuntimeHandler,
  RuntimeState,
} from './types.js';

export interface EngineOptions {
  conmonPath: string;
  /** run_root: conmon's per-container files and attach links live under it. */
  runRoot: string;
  /** runtime.container_exit_dir, resolved (default <run_root>/exits). */
  exitDir: string;
  cgroupDriver: CgroupDriver;
  log: Logger;
  /** conmon's own log level (it logs to syslog/stderr only on failures). */
  conmonLogLevel?: 'debug' | 'info' | 'warn' | 'error';
  /** How long conmon may take to report the pid of a new container. */
  createTimeoutMs?: number;
}

/** What berth remembers beside conmon's files, for calls that only get an ID. */
interface ConmonMeta {
  bundleDir: string;
  logPath: string;
  handler: string;
  tty: boolean;
}

function describe(id: string, handler: RuntimeHandler): string {
  return `container ${id} (runtime handler ${JSON.stringify(handler.name)}, ${handler.path})`;
}

export class ConmonEngine implements OciEngine {
  private readonly layout: ConmonLayout;
  private readonly exits: ExitWatcher;

  constructor(private readonly options: EngineOptions) {
    this.layout = { runRoot: options.runRoot, exitDir: options.exitDir };
    this.exits = new ExitWatcher(this.layout);
  }

  async create(request: CreateRequest): Promise<{ pid: number }> {
    const { id, handler } = request;
    assertContainerId(id);
    if (request.logPath.includes(':')) {
      // conmon splits --log-path at ':' (driver:path).
      throw new InvalidArgumentError(
        `log path ${JSON.stringify(request.logPath)} of container ${id} contains ':'`,
      );
    }
    const persist = persistDir(this.layout, id);
    await Promise.all([
      mkdir(persist, { recursive: true, mode: 0o700 }),
      mkdir(socketDir(this.layout), { recursive: true, mode: 0o700 }),
      mkdir(this.layout.exitDir, { recursive: true, mode: 0o700 }),
      mkdir(request.bundleDir, { recursive: true, mode: 0o700 }),
      request.logPath ? mkdir(dirname(request.logPath), { recursive: true }) : undefined,
    ]);
    try {
      const meta: ConmonMeta = {
        bundleDir: request.bundleDir,
        logPath: request.logPath,
        handler: handler.name,
        tty: request.tty,
      };
      // No fsync: runc reads config.json right now and keeps its own state; meta.json is
      // under the tmpfs run_root. A power loss ends the container these describe.
      await Promise.all([
        // A reused ID must not inherit an old exit.
        rm(exitFile(this.layout, id), { force: true }),
        rm(join(persist, 'oom'), { force: true }),
        writeFileReplace(join(request.bundleDir, 'config.json'), JSON.stringify(request.spec)),
        unlink(bundleLink(this.layout, id))
          .catch(() => undefined)
          .then(() => symlink(request.bundleDir, bundleLink(this.layout, id))),
        writeFileReplace(join(persist, 'meta.json'), JSON.stringify(meta)),
      ]);
      const started = Date.now();
      const runtime = await conmonRuntime(handler, request.joinsSandbox ?? false, persist);
      const result = await conmonCreate({
        conmonPath: this.options.conmonPath,
        layout: this.layout,
        id,
        runtimePath: runtime.path,
        runtimeArgs: runtime.args,
        bundleDir: request.bundleDir,
        logPath: request.logPath,
        stdin: request.stdin,
        stdinOnce: request.stdinOnce,
        tty: request.tty,
        systemdCgroup: this.options.cgroupDriver === 'systemd',
        logLevel: this.options.conmonLogLevel,
        timeoutMs: this.options.createTimeoutMs,
        beforeStart: request.monitorCgroup
          ? (pid) => moveToCgroup(pid, request.monitorCgroup!, this.options.cgroupDriver)
          : undefined,
      });
      this.options.log.debug(
        { id, handler: handler.name, pid: result.pid, conmonPid: result.conmonPid, ms: Date.now() - started },
        'container created under conmon',
      );
      return { pid: result.pid };
    } catch (err) {
      // Undo: the runtime may hold a record, conmon's files are ours.
      await this.delete(id, handler, true).catch(() => undefined);
      await this.cleanup(id).catch(() => undefined);
      if (err instanceof ConmonError) {
        throw new FailedPreconditionError(
          `runtime handler ${JSON.stringify(handler.name)} (${handler.path}) failed to create container ${id}: ${err.runtimeMessage}`,
          { cause: err },
        );
      }
      if (err instanceof BerthError) throw err;
      throw new FailedPreconditionError(`creating ${describe(id, handler)}: ${errorMessage(err)}`, {
        cause: err,
      });
    }
  }

  async start(id: string, handler: RuntimeHandler): Promise<void> {
    assertContainerId(id);
    if (usesRuncExecFifo(handler)) {
      const initPid = await readPid(containerPidFile(this.layout, id));
      if (initPid > 0 && (await startThroughExecFifo(handler, id, initPid))) return;
    } else if (isRunsc(handler)) {
      const monitorPid = await readPid(containerPidFile(this.layout, id));
      if (await startThroughShim(persistDir(this.layout, id), id, monitorPid)) return;
    }
    await runtimeStart(handler, id);
  }

  state(id: string, handler: RuntimeHandler): Promise<RuntimeState | undefined> {
    return runtimeState(handler, id);
  }

  async kill(id: string, handler: RuntimeHandler, signal: string, all = false): Promise<void> {
    if (isRunsc(handler) && (await shimAwaitsStart(persistDir(this.layout, id)))) {
      // Never started inside the sandbox: the shim conmon watches stands for the container.
      const monitorPid = await readPid(containerPidFile(this.layout, id));
      if (monitorPid <= 0) return;
      try {
        process.kill(monitorPid, /^\d+$/.test(signal) ? Number(signal) : signal.replace(/^(SIG)?/, 'SIG'));
      } catch (err) {
        if (errnoCode(err) !== 'ESRCH') throw err; // already gone: stopping is idempotent
      }
      return;
    }
    return runtimeKill(handler, id, signal, all);
  }

  async delete(id: string, handler: RuntimeHandler, force: boolean): Promise<void> {
    await runtimeDelete(handler, id, force);
    if (isRunsc(handler)) await removeStaleRunscLocks(handler.root, id);
  }

  update(id: string, handler: RuntimeHandler, resources: Record<string, unknown>): Promise<void> {
    return runtimeUpdate(handler, id, resources);
  }

  exitInfo(id: string): Promise<ExitInfo | undefined> {
    assertContainerId(id);
    return readExit(this.layout, id);
  }

  waitExit(id: string, signal?: AbortSignal): Promise<ExitInfo> {
    assertContainerId(id);
    let conmonPid = 0;
    return this.exits.wait(id, signal, async () => {
      if (conmonPid <= 0) conmonPid = await this.conmonPid(id);
      return processAlive(conmonPid);
    });
  }

  onAdoptedExit(listener: (pid: number, exitCode: number) => void): void {
    onAdoptedExit((pid, end) => listener(pid, exitCodeOf(end)));
  }

  async reopenLog(id: string): Promise<void> {
    assertContainerId(id);
    const meta = await this.meta(id);
    if (!meta.logPath) throw new FailedPreconditionError(`container ${id} has no log file to reopen`);
    // A conmon winding down after the exit would take the request and never reopen.
    const seen = await this.seenByConmon(id);
    if (seen === 'no conmon') {
      // conmon writes the log: without it nothing could reopen it, even if the process runs on.
      throw new FailedPreconditionError(
        `container ${id} has no conmon (it ended): its log cannot be reopened`,
      );
    }
    if (seen !== 'running') {
      throw new FailedPreconditionError(`container ${id} is not running: its log cannot be reopened`);
    }
    try {
      await reopenLogThroughCtl(ctlFifo(this.layout, id), meta.logPath);
    } catch (err) {
      if (errnoCode(err) === 'ENXIO' || errnoCode(err) === 'ENOENT') {
        throw new FailedPreconditionError(`container ${id} is not running: its log cannot be reopened`);
      }
      throw new FailedPreconditionError(`reopening the log of container ${id}: ${errorMessage(err)}`, {
        cause: err,
      });
    }
  }

  attachSocketPath(id: string): string {
    return attachSocket(this.layout, id);
  }

  async exec(request: ExecRequest): Promise<ExecProcess> {
    assertContainerId(request.id);
    const what = describe(request.id, request.handler);
    // Fast path (saves a `runtime state`, ~30 ms): conmon alive and no exit
    // recorded means running; a container exiting meanwhile makes the
    // runtime's exec fail on its own. Otherwise ask the runtime.
    const running = (async () => {
      const seen = await this.seenByConmon(request.id);
      if (seen === 'exited')
        throw new FailedPreconditionError(`exec in ${what}: the container is stopped, not running`);
      if (seen === 'no conmon') {
        const state = await runtimeState(request.handler, request.id);
        if (!state) throw new NotFoundError(`exec in ${what}: the runtime does not know it`);
        if (state.status !== 'running') {
          throw new FailedPreconditionError(`exec in ${what}: the container is ${state.status}, not running`);
        }
      }
    })();
    // startExec awaits it, unless it refuses the request first.
    running.catch(() => undefined);
    const dir = join(persistDir(this.layout, request.id), `exec-${randomBytes(6).toString('hex')}`);
    return startExec(
      request,
      { configPath: join(bundleLink(this.layout, request.id), 'config.json'), dir },
      what,
      running,
    );
  }

  async cleanup(id: string): Promise<void> {
    assertContainerId(id);
    await Promise.all([
      rm(persistDir(this.layout, id), { recursive: true, force: true }),
      rm(exitFile(this.layout, id), { force: true }),
      rm(join(socketDir(this.layout), id), { force: true }),
    ]);
  }

  /** pid of the container's conmon, 0 when unknown. */
  conmonPid(id: string): Promise<number> {
    assertContainerId(id);
    return readPid(conmonPidFile(this.layout, id));
  }

  /**
   * The container's state as its conmon tells it, without asking the runtime:
   * an exit recorded counts even while conmon is still winding down.
   */
  private async seenByConmon(id: string): Promise<'running' | 'exited' | 'no conmon'> {
    const [alive, exit] = await Promise.all([this.conmonAlive(id), readExit(this.layout, id)]);
    if (exit) return 'exited';
    return alive ? 'running' : 'no conmon';
  }

  /** True while the container's conmon runs (after a berth restart too). */
  async conmonAlive(id: string): Promise<boolean> {
    return processAlive(await this.conmonPid(id));
  }

  /** Stops watching exits (daemon shutdown); containers and conmons keep running. */
  close(): void {
    this.exits.close();
  }

  private async meta(id: string): Promise<ConmonMeta> {
    try {
      return JSON.parse(await readFile(join(persistDir(this.layout, id), 'meta.json'), 'utf8')) as ConmonMeta;
    } catch (err) {
      if (errnoCode(err) === 'ENOENT') throw new NotFoundError(`container ${id} has no conmon state`);
      throw err;
    }
  }
}
