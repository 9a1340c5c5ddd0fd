/**
 * The contract between the OCI engine (src/oci, conmon/) and the pod and
 * container lifecycle that uses it (src/sandbox, src/container).
 */

import type { RuntimeKind } from './runtime-kind.js';

/** A configured RuntimeClass handler (runtime.handlers.NAME). */
export interface RuntimeHandler {
  name: string;
  /** OCI runtime binary. */
  path: string;
  /** --root state directory of the runtime. */
  root: string;
  type: 'oci' | 'vm';
  /** Which runtime it is; absent: from the binary's name (see runtime-kind.ts). */
  kind?: RuntimeKind;
  /**
   * Extra global flags given to the runtime before the verb (after --root),
   * e.g. runsc's `--ignore-cgroups`. From runtime.handlers.NAME.runtime_args.
   */
  runtimeArgs?: string[];
}

/** The OCI runtime spec (config.json); typed loosely beyond what berth writes. */
export interface OciSpec {
  ociVersion: string;
  process?: {
    terminal?: boolean;
    user: { uid: number; gid: number; umask?: number; additionalGids?: number[] };
    args: string[];
    env?: string[];
    cwd: string;
    capabilities?: Record<'bounding' | 'effective' | 'inheritable' | 'permitted' | 'ambient', string[]>;
    rlimits?: { type: string; hard: number; soft: number }[];
    noNewPrivileges?: boolean;
    apparmorProfile?: string;
    oomScoreAdj?: number;
    selinuxLabel?: string;
  };
  root?: { path: string; readonly?: boolean };
  hostname?: string;
  mounts?: { destination: string; type?: string; source?: string; options?: string[] }[];
  hooks?: Record<string, unknown>;
  annotations?: Record<string, string>;
  linux?: Record<string, unknown>;
}

/** Everything needed to create one container (infra or workload) under conmon. */
export interface CreateRequest {
  id: string;
  handler: RuntimeHandler;
  /** Bundle directory: berth writes config.json here. */
  bundleDir: string;
  spec: OciSpec;
  /** CRI log file conmon writes (k8s-file format); empty for no log. */
  logPath: string;
  /** Keep stdin open for attach. */
  stdin: boolean;
  stdinOnce: boolean;
  tty: boolean;
  /** cgroup parent (cgroupfs path or systemd slice) for conmon itself. */
  monitorCgroup?: string;
  /** The container joins its pod's sandbox (not the infra itself). */
  joinsSandbox?: boolean;
}

/** What the runtime says about a container (`runtime state`). */
export interface RuntimeState {
  status: 'creating' | 'created' | 'running' | 'stopped' | 'paused';
  pid: number;
}

/** How a container ended, from conmon's exit file. */
export interface ExitInfo {
  exitCode: number;
  /** Nanoseconds since the epoch (exit file mtime). */
  finishedAtNs: bigint;
  oomKilled: boolean;
}

/** The container's conmon ended without recording an exit: none will ever come. */
export class MonitorGoneError extends Error {
  constructor(readonly containerId: string) {
    super(`the conmon of ${containerId} is gone and recorded no exit`);
    this.name = 'MonitorGoneError';
  }
}

export interface ExecRequest {
  id: string;
  handler: RuntimeHandler;
  args: string[];
  tty: boolean;
  /** Process fields overriding the container's (env, cwd, user). */
  env?: string[];
  cwd?: string;
  /** uid/gid (and extra gids) of the process; the container's own user when absent. */
  user?: { uid: number; gid: number; additionalGids?: number[] };
  /**
   * Kill the process (SIGKILL) after this long; `exited` then resolves with
   * timedOut. 0 or absent: no limit (ExecSync passes its timeout here).
   */
  timeoutMs?: number;
}

/** A running exec: stdio pipes (or the tty), resize and a promise of its exit code. */
export interface ExecProcess {
  stdin: NodeJS.WritableStream | null;
  stdout: NodeJS.ReadableStream | null;
  stderr: NodeJS.ReadableStream | null;
  resize(cols: number, rows: number): void;
  kill(signal: NodeJS.Signals): void;
  /** exitCode follows the shell convention: 128+N when killed by signal N. */
  exited: Promise<{ exitCode: number; signal: NodeJS.Signals | null; timedOut?: boolean }>;
  /** True until the runtime process has ended. */
  running(): boolean;
}

/** Drives OCI runtimes through conmon. One instance per daemon. */
export interface OciEngine {
  /** Writes config.json, runs conmon (which runs `runtime create`); resolves with the container pid. */
  create(request: CreateRequest): Promise<{ pid: number }>;
  start(id: string, handler: RuntimeHandler): Promise<void>;
  state(id: string, handler: RuntimeHandler): Promise<RuntimeState | undefined>;
  kill(id: string, handler: RuntimeHandler, signal: string, all?: boolean): Promise<void>;
  /** Removes the runtime's record; force also kills. Idempotent. */
  delete(id: string, handler: RuntimeHandler, force: boolean): Promise<void>;
  /** Applies new linux.resources to a running container. */
  update(id: string, handler: RuntimeHandler, resources: Record<string, unknown>): Promise<void>;
  /** Exit recorded by conmon, if the container has exited. */
  exitInfo(id: string): Promise<ExitInfo | undefined>;
  /**
   * Waits until conmon records an exit or the signal aborts; rejects with
   * MonitorGoneError (within a few seconds) when conmon dies recording none.
   */
  waitExit(id: string, signal?: AbortSignal): Promise<ExitInfo>;
  /**
   * Calls listener when a process berth's programs left behind ends, with its
   * exit code (128 + signal when killed): among them a container whose conmon
   * died, reparented to berth's process helper.
   */
  onAdoptedExit(listener: (pid: number, exitCode: number) => void): void;
  /** Asks conmon to reopen the container's log file. */
  reopenLog(id: string): Promise<void>;
  /** Unix socket path of conmon's attach endpoint for the container. */
  attachSocketPath(id: string): string;
  exec(request: ExecRequest): Promise<ExecProcess>;
  /** Removes conmon's per-container files (exit file, sockets, pid files). */
  cleanup(id: string): Promise<void>;
}
