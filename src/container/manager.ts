/**
 * Container lifecycle: create (name reservation, image, overlay rootfs, OCI
 * spec, conmon), start, stop, remove, status, list, exec, resource updates,
 * log reopening, and start-up reconciliation of records with what conmon and
 * the runtime report. Records are crash-safe; each create step is undone
 * when a later one fails.
 */
import { mkdir, readFile } from 'node:fs/promises';
import { dirname, isAbsolute, join } from 'node:path';
import type { BerthConfig } from '../config/schema.js';
import {
  ContainerConfig,
  ImageSpec,
  LinuxContainerResources,
  Mount,
  PodSandboxConfig,
  NamespaceMode,
} from '../generated/api.js';
import {
  BerthError,
  DeadlineExceededError,
  FailedPreconditionError,
  InternalError,
  InvalidArgumentError,
  NotFoundError,
  errorMessage,
} from '../errors.js';
import type { Logger } from '../log.js';
import type { ImageManager } from '../image/manager.js';
import { MonitorGoneError, type OciEngine, type RuntimeHandler, type ExitInfo } from '../oci/types.js';
import type { SpecHost, ContainerSpecInput, ContainerSpecResult, OciResources } from '../oci/spec/index.js';
import type { SandboxAccess, SandboxRecord } from '../sandbox/types.js';
import { RecordStore } from '../state/store.js';
import { KeyedMutex } from '../state/lock.js';
import { matchPrefix, newId, resolvePrefix } from '../state/ids.js';
import { assertContainedRelative, secureJoin } from '../util/safe-path.js';
import { StatsCollector } from '../stats/collector.js';
import { resendWhenCaught, signalNumber } from './late-handler.js';
import { mountRootfs, rootfsPaths } from './rootfs.js';
import { mountIdmappedRootfs, removeContainerRootfs } from './idmap.js';
import { mountImageVolumes, planImageVolumes } from './image-volumes.js';
import type { RuntimeCounters } from '../util/runtime-counters.js';
import {
  CONTAINER_NAME_RE,
  containerName,
  parseContainerRecord,
  stateOf,
  type ContainerRecord,
} from './record.js';

/** The engine berth uses, plus what conmon can tell after a restart. */
export type ContainerEngine = OciEngine & {
  conmonAlive(id: string): Promise<boolean>;
  conmonPid(id: string): Promise<number>;
};

export interface ContainerManagerDeps {
  config: () => BerthConfig;
  log: Logger;
  engine: ContainerEngine;
  images: ImageManager;
  sandboxes: SandboxAccess;
  specHost: SpecHost;
  buildSpec: (input: ContainerSpecInput) => Promise<ContainerSpecResult>;
  /** CRI resources → linux.resources (UpdateContainerResources). */
  resources: (linux: LinuxContainerResources | undefined, host: SpecHost, what: string) => OciResources;
  /** What exits count (Prometheus); nothing by default. */
  counters?: RuntimeCounters;
}

/** ExecSync output cap per stream (CRI-O and containerd use 16 MiB). */
export const EXEC_SYNC_MAX_BYTES = 16 * 1024 * 1024;
/** Room left in an ExecSync response for field tags, lengths and the exit code. */
const EXEC_SYNC_FRAMING_BYTES = 1024;
/** How long Remove waits for conmon to record the exit of a container it killed. */
const REMOVE_EXIT_WAIT_MS = 5_000;
/** How long a SIGKILLed container may take to be reported exited. */
const KILL_WAIT_MS = 30_000;
/** How often the runtime is asked about containers that have no conmon. */
const UNMONITORED_POLL_MS = 2_000;
const ADOPTED_EXIT_MESSAGE = 'its conmon had died; berth reaped the process and recorded its exit status';

export function nowNs(): string {
  return (BigInt(Date.now()) * 1_000_000n).toString();
}

export function describeContainer(record: ContainerRecord): string {
  return `container ${record.id} (${record.name})`;
}

export interface ExecSyncResult {
  stdout: Buffer;
  stderr: Buffer;
  exitCode: number;
}

export class ContainerManager {
  readonly stats: StatsCollector;
  private readonly locks = new KeyedMutex();
  private readonly watching = new Map<string, AbortController>();
  /** Containers alive without their conmon (it died, or was gone at start-up): no exit file will come. */
  private readonly unmonitored = new Set<string>();
  private unmonitoredPoll?: NodeJS.Timeout;
  /** Exits of container processes reaped by berth's process helper (their conmon died), by pid. */
  private readonly adoptedExits = new Map<number, ExitInfo>();
  private closed = false;

  private constructor(
    private readonly deps: ContainerManagerDeps,
    readonly store: RecordStore<ContainerRecord>,
  ) {
    this.stats = new StatsCollector(deps.config().root, deps.specHost.cgroupDriver);
  }

  /** The pods containers live in (for pod-level RPCs such as PodSandboxStats). */
  get sandboxes(): SandboxAccess {
    return this.deps.sandboxes;
  }

  /**
   * Opens the record store, reconciles every record with conmon and the
   * runtime (the sandbox manager must be open: names share its registry),
   * and registers the image in-use check and the pod stop/remove hooks.
   */
  static async open(deps: ContainerManagerDeps): Promise<ContainerManager> {
    const store = await RecordStore.open(
      join(deps.config().root, 'state', 'containers'),
      'container',
      parseContainerRecord,
      deps.log,
    );
    const manager = new ContainerManager(deps, store);
    await manager.reconcile();
    deps.images.setInUseChecker((imageId) => {
      // Containers still being created count too: their overlay sits on the image's layers.
      const user = store
        .all()
        .find((r) => r.imageId === imageId || r.imageVolumes?.some((v) => v.imageId === imageId));
      return user && `${user.id} (${user.name})`;
    });
    deps.engine.onAdoptedExit((pid, exitCode) => manager.adoptedExit(pid, exitCode));
    deps.sandboxes.onStop((sandbox) => manager.stopAllOf(sandbox));
    deps.sandboxes.onRemove((sandbox) => manager.removeAllOf(sandbox));
    return manager;
  }

  // ---- lookup ----

  /** A visible container by ID or unique prefix; NOT_FOUND otherwise. */
  get(idOrPrefix: string): ContainerRecord {
    const id = resolvePrefix(this.visibleIds(), idOrPrefix, 'container');
    return this.store.get(id)!;
  }

  find(idOrPrefix: string): ContainerRecord | undefined {
    const id = matchPrefix(this.visibleIds(), idOrPrefix, 'container');
    return id === undefined ? undefined : this.store.get(id);
  }

  list(): ContainerRecord[] {
    return this.store.all().filter((r) => r.phase === 'created');
  }

  private *visibleIds(): Iterable<string> {
    for (const r of this.store.all()) if (r.phase === 'created') yield r.id;
  }

  handlerOf(record: ContainerRecord): RuntimeHandler {
    const sandbox = this.deps.sandboxes.find(record.podSandboxId);
    return sandbox ? this.deps.sandboxes.handlerOf(sandbox) : record.runtime;
  }

  // ---- create ----

  async create(
    podSandboxId: string,
    config: ContainerConfig,
    sandboxConfig?: PodSandboxConfig,
  ): Promise<string> {
    if (!podSandboxId) throw new InvalidArgumentError('CreateContainer: pod sandbox ID is empty');
    const meta = config.metadata;
    if (!meta?.name) throw new InvalidArgumentError('CreateContainer: container metadata.name is empty');
    if (!CONTAINER_NAME_RE.test(meta.name)) {
      throw new InvalidArgumentError(
        `CreateContainer: container name ${JSON.stringify(meta.name)} is not a valid name`,
      );
    }
    const imageRef = config.image?.image ?? '';
    if (!imageRef) throw new InvalidArgumentError(`CreateContainer: container ${meta.name} names no image`);
    validateMounts(config.mounts, meta.name);
    const sandbox = this.deps.sandboxes.get(podSandboxId);
    return this.deps.sandboxes.withLock(sandbox.id, async () => {
      const current = this.deps.sandboxes.get(sandbox.id);
      if (current.phase !== 'ready') {
        throw new FailedPreconditionError(
          `CreateContainer: pod sandbox ${current.id} (${current.name}) is not ready (${current.phase})`,
        );
      }
      return this.createLocked(current, config, sandboxConfig);
    });
  }

  private async createLocked(
    sandbox: SandboxRecord,
    config: ContainerConfig,
    sandboxConfig: PodSandboxConfig | undefined,
  ): Promise<string> {
    const meta = config.metadata!;
    const name = containerName(meta, sandbox.metadata);
    const id = newId();
    const undo: (() => Promise<void>)[] = [];
    const log = this.deps.log.child({ container: id, name });
    // Step timings, logged at debug: where a slow create spends its time.
    const timings: Record<string, number> = {};
    let mark = performance.now();
    const step = (what: string) => {
      const now = performance.now();
      timings[what] = Math.round((now - mark) * 10) / 10;
      mark = now;
    };
    try {
      this.deps.sandboxes.names.reserve(name, id, 'container name');
      undo.push(async () => this.deps.sandboxes.names.release(name, id));

      const imageRef = config.image!.image;
      const resolved = await this.deps.images.resolve(imageRef);
      if (!resolved) {
        throw new NotFoundError(
          `CreateContainer ${meta.name}: image ${JSON.stringify(imageRef)} not found; pull it first`,
        );
      }
      const image = resolved.record;
      this.deps.images.requireRunnable(image, imageRef, `CreateContainer ${meta.name}`);
      const imageVolumes = await planImageVolumes(
        config.mounts,
        this.deps.images,
        `CreateContainer ${meta.name}`,
      );
      step('resolve');
      const logPath = await this.logPathFor(sandbox, config);
      const handler = this.deps.sandboxes.handlerOf(sandbox);
      const containerDir = join(this.deps.config().root, 'containers', id);
      const paths = rootfsPaths(containerDir);
      const bundleDir = join(containerDir, 'bundle');
      const record: ContainerRecord = {
        version: 1,
        id,
        podSandboxId: sandbox.id,
        name,
        metadata: { name: meta.name, attempt: meta.attempt },
        phase: 'creating',
        labels: { ...config.labels },
        annotations: { ...config.annotations },
        imageSpec: ImageSpec.toJSON(config.image!),
        imageName: resolved.tag ?? imageRef,
        imageId: image.id,
        createdAtNs: nowNs(),
        logPath,
        // An image volume is reported with the image's ID, as CRI-O does: kubelet's image
        // garbage collection looks for that ID among the mounts of ContainerStatus.
        mounts: config.mounts.map((m, index) => {
          const volume = imageVolumes.find((v) => v.index === index);
          return Mount.toJSON(volume ? { ...m, image: { ...m.image!, image: volume.imageId } } : m);
        }),
        ...(imageVolumes.length > 0
          ? { imageVolumes: imageVolumes.map(({ containerPath, imageId }) => ({ containerPath, imageId })) }
          : {}),
        resources: config.linux?.resources && LinuxContainerResources.toJSON(config.linux.resources),
        stopSignal: 'SIGTERM',
        handler: handler.name,
        runtime: handler,
        containerDir,
        bundleDir,
        pid: 0,
        tty: config.tty,
        stdin: config.stdin,
        stdinOnce: config.stdinOnce,
        config: ContainerConfig.toJSON(config),
      };
      // The record comes first: a crash from here on leaves something start-up can undo.
      await this.store.put(record);
      undo.push(() => this.store.delete(id));
      if (logPath) await mkdir(dirname(logPath), { recursive: true });
      step('record');

      undo.push(() => removeContainerRootfs(paths));
      if (sandbox.userns) await mountIdmappedRootfs(paths, this.deps.images.layerDirs(image), sandbox.userns);
      else await mountRootfs(paths, this.deps.images.layerDirs(image));
      const mounts = await mountImageVolumes(
        config.mounts,
        imageVolumes,
        containerDir,
        `CreateContainer ${meta.name}`,
        sandbox.userns,
      );
      step('mount');

      const built = await this.deps.buildSpec({
        id,
        config: imageVolumes.length > 0 ? { ...config, mounts } : config,
        sandbox: {
          id: sandbox.id,
          config: sandboxConfig ?? PodSandboxConfig.fromJSON(sandbox.config),
          namespacePaths: this.deps.sandboxes.namespacePaths(sandbox),
          hostsPath: sandbox.hostsPath,
          resolvConfPath: sandbox.resolvConfPath,
          hostnamePath: sandbox.hostnamePath,
          shmPath: sandbox.shmPath,
          cgroupParent: sandbox.cgroupParent,
          hostname: sandbox.hostname,
        },
        image: image.config,
        rootfs: paths.merged,
        handler,
        targetPidNamespace: this.targetPidNamespace(config, sandbox),
        cdiSpecDirs: this.deps.config().runtime.cdi_spec_dirs,
        annotations: {
          'io.kubernetes.cri.container-type': 'container',
          'io.kubernetes.cri.container-name': meta.name,
          'io.kubernetes.cri.sandbox-id': sandbox.id,
          'io.kubernetes.cri.sandbox-name': sandbox.metadata.name,
          'io.kubernetes.cri.sandbox-namespace': sandbox.metadata.namespace,
          'io.kubernetes.cri.sandbox-uid': sandbox.metadata.uid,
          'io.kubernetes.cri.image-name': record.imageName,
        },
        host: this.deps.specHost,
      });

      step('spec');
      undo.push(async () => {
        await this.deps.engine.delete(id, handler, true).catch(() => undefined);
        await this.deps.engine.cleanup(id).catch(() => undefined);
      });
      const { pid } = await this.deps.engine.create({
        id,
        handler,
        bundleDir,
        spec: built.spec,
        logPath,
        stdin: config.stdin,
        stdinOnce: config.stdinOnce,
        tty: config.tty,
        monitorCgroup:
          this.deps.config().runtime.handlers[handler.name]?.monitor_cgroup ||
          sandbox.cgroupParent ||
          undefined,
        joinsSandbox: true,
      });
      step('runtime');
      await this.store.put({
        ...record,
        phase: 'created',
        pid,
        stopSignal: built.stopSignal,
        user: { uid: built.user.uid, gid: built.user.gid, additionalGids: built.user.additionalGids },
      });
      step('commit');
      this.watchExit(id);
      log.debug({ pod: sandbox.id, image: image.id, pid, ms: timings }, 'container created');
      return id;
    } catch (err) {
      for (const step of undo.reverse()) {
        await step().catch((e: unknown) =>
          log.warn({ err: errorMessage(e) }, 'undoing a failed CreateContainer step failed'),
        );
      }
      if (err instanceof BerthError) throw err;
      // A system error (a full disk, a failed mount) names a path, not the container.
      throw new InternalError(`CreateContainer ${name}: ${errorMessage(err)}`, { cause: err });
    }
  }

  /** <pod log dir>/<log_path>, joined so neither '..' nor a symlink leaves the pod's dir. */
  private async logPathFor(sandbox: SandboxRecord, config: ContainerConfig): Promise<string> {
    if (!config.logPath) return '';
    const rel = assertContainedRelative(config.logPath, `log path of container ${config.metadata!.name}`);
    if (!sandbox.logDirectory) {
      throw new InvalidArgumentError(
        `container ${config.metadata!.name} has log path ${JSON.stringify(config.logPath)} but pod ${sandbox.id} has no log directory`,
      );
    }
    if (!isAbsolute(sandbox.logDirectory)) {
      throw new InvalidArgumentError(
        `log directory ${JSON.stringify(sandbox.logDirectory)} of pod ${sandbox.id} is not absolute`,
      );
    }
    if (rel === '')
      throw new InvalidArgumentError(
        `log path of container ${config.metadata!.name} is empty after cleaning`,
      );
    await mkdir(sandbox.logDirectory, { recursive: true });
    return secureJoin(sandbox.logDirectory, rel);
  }

  /** /proc/<pid>/ns/pid of the target container for NamespaceMode TARGET. */
  private targetPidNamespace(config: ContainerConfig, sandbox: SandboxRecord): string | undefined {
    const ns = config.linux?.securityContext?.namespaceOptions;
    if (ns?.pid !== NamespaceMode.TARGET) return undefined;
    const target = this.find(ns.targetId);
    if (!target || target.podSandboxId !== sandbox.id) {
      throw new NotFoundError(
        `target container ${JSON.stringify(ns.targetId)} of the PID namespace is not in pod ${sandbox.id}`,
      );
    }
    if (stateOf(target) === 'exited' || target.pid <= 0) {
      throw new FailedPreconditionError(`target container ${target.id} of the PID namespace is not running`);
    }
    return `/proc/${target.pid}/ns/pid`;
  }

  // ---- start / stop / remove ----

  async start(idOrPrefix: string): Promise<void> {
    const id = this.get(idOrPrefix).id;
    await this.locks.with(id, async () => {
      const record = this.get(id);
      const state = stateOf(record);
      if (state !== 'created') {
        throw new FailedPreconditionError(
          `StartContainer: ${describeContainer(record)} is ${state}, not created`,
        );
      }
      const sandbox = this.deps.sandboxes.find(record.podSandboxId);
      if (!sandbox || sandbox.phase !== 'ready') {
        throw new FailedPreconditionError(
          `StartContainer: ${describeContainer(record)}: its pod sandbox ${record.podSandboxId} is ${sandbox ? 'stopped' : 'gone'}`,
        );
      }
      const handler = this.handlerOf(record);
      try {
        await this.deps.engine.start(id, handler);
      } catch (err) {
        // A start that failed may still have run the process: record what conmon saw.
        await this.refreshExit(id);
        throw err instanceof BerthError
          ? err
          : new FailedPreconditionError(`StartContainer ${describeContainer(record)}: ${errorMessage(err)}`, {
              cause: err,
            });
      }
      // No fsync on the start path: if a crash loses this, start-up reconciliation takes the
      // start from the runtime (adoptStart), and after a power loss the process is gone too.
      await this.store.put({ ...this.get(id), startedAtNs: nowNs() }, { derivable: true });
    });
  }

  /**
   * Stop signal, up to `timeoutSeconds` for the exit, then SIGKILL. An exited
   * container is fine, and so is an unknown ID (idempotent, as RemoveContainer).
   */
  async stop(idOrPrefix: string, timeoutSeconds: number): Promise<void> {
    const record = this.find(idOrPrefix);
    if (!record) return;
    await this.locks.with(record.id, () => this.stopLocked(record.id, timeoutSeconds));
  }

  private async stopLocked(id: string, timeoutSeconds: number): Promise<void> {
    await this.refreshExit(id);
    const record = this.store.get(id);
    if (!record || stateOf(record) === 'exited') return;
    const handler = this.handlerOf(record);
    const what = describeContainer(record);
    const log = this.deps.log.child({ container: id });
    const exitWithin = async (ms: number): Promise<ExitInfo | undefined> => {
      const deadline = Date.now() + ms;
      if (!this.unmonitored.has(id)) {
        try {
          return await this.deps.engine.waitExit(id, AbortSignal.timeout(ms));
        } catch (err) {
          if (!(err instanceof MonitorGoneError)) return this.deps.engine.exitInfo(id);
          this.monitorLost(id);
        }
      }
      // No conmon writes its exit: wait for the runtime to see it stop (the status comes from adoptedExit, if at all).
      while (Date.now() < deadline) {
        const state = await this.deps.engine.state(id, handler).catch(() => undefined);
        if (!state || state.status === 'stopped') break;
        await new Promise((r) => setTimeout(r, 100));
      }
      return undefined;
    };
    let exit: ExitInfo | undefined;
    if (timeoutSeconds > 0 && stateOf(record) === 'running') {
      const sendStopSignal = () =>
        this.deps.engine.kill(id, handler, record.stopSignal).catch((err: unknown) => {
          log.debug({ err: errorMessage(err) }, 'stop signal not delivered');
        });
      await sendStopSignal();
      const signo = signalNumber(record.stopSignal);
      const watch = new AbortController();
      const resent = signo ? resendWhenCaught(record.pid, signo, sendStopSignal, watch.signal) : undefined;
      exit = await exitWithin(timeoutSeconds * 1000);
      watch.abort();
      await resent;
    }
    if (!exit) {
      await this.deps.engine.kill(id, handler, 'SIGKILL', true).catch((err: unknown) => {
        log.debug({ err: errorMessage(err) }, 'SIGKILL not delivered');
      });
      exit = await exitWithin(KILL_WAIT_MS);
    }
    if (!exit) {
      const state = await this.deps.engine.state(id, handler);
      if (state && state.status !== 'stopped') {
        throw new FailedPreconditionError(`StopContainer: ${what} is still ${state.status} after SIGKILL`);
      }
      const adopted = this.adoptedExits.get(record.pid);
      if (adopted) {
        await this.recordExit(id, adopted, ADOPTED_EXIT_MESSAGE);
        return;
      }
      // The runtime says it is gone but conmon recorded nothing (conmon was killed).
      await this.recordExit(
        id,
        { exitCode: 137, finishedAtNs: BigInt(nowNs()), oomKilled: false },
        'stopped without a conmon; no exit status was recorded',
      );
      return;
    }
    await this.recordExit(id, exit);
  }

  /** Removes the container whatever its state: kills it, then deletes every trace. Idempotent. */
  async remove(idOrPrefix: string): Promise<void> {
    const record = this.find(idOrPrefix);
    if (!record) return;
    await this.locks.with(record.id, () => this.removeLocked(record.id));
  }

  private async removeLocked(id: string): Promise<void> {
    const record = this.store.get(id);
    if (!record) return;
    this.watching.get(id)?.abort();
    this.watching.delete(id);
    const monitored = await this.deps.engine.conmonAlive(id).catch(() => false);
    await this.deps.engine.delete(id, this.handlerOf(record), true);
    if (monitored) {
      // conmon writes the exit file once it sees the kill: let it, so cleanup leaves nothing behind.
      await this.deps.engine.waitExit(id, AbortSignal.timeout(REMOVE_EXIT_WAIT_MS)).catch(() => undefined);
    }
    await this.deps.engine.cleanup(id);
    await removeContainerRootfs(rootfsPaths(record.containerDir));
    // The record goes last: a crash before this leaves a record a second Remove finishes.
    await this.store.delete(id);
    this.unmonitored.delete(id);
    this.adoptedExits.delete(record.pid);
    this.deps.sandboxes.names.release(record.name, id);
    this.stats.forget(id);
  }

  private async stopAllOf(sandbox: SandboxRecord): Promise<void> {
    const mine = this.store.all().filter((r) => r.podSandboxId === sandbox.id && r.phase === 'created');
    await Promise.all(mine.map((r) => this.locks.with(r.id, () => this.stopLocked(r.id, 0))));
  }

  private async removeAllOf(sandbox: SandboxRecord): Promise<void> {
    const mine = this.store.all().filter((r) => r.podSandboxId === sandbox.id);
    await Promise.all(mine.map((r) => this.locks.with(r.id, () => this.removeLocked(r.id))));
  }

  // ---- exits ----

  private watchExit(id: string): void {
    if (this.closed || this.watching.has(id)) return;
    const controller = new AbortController();
    this.watching.set(id, controller);
    this.deps.engine
      .waitExit(id, controller.signal)
      .then(
        (exit) => {
          this.watching.delete(id);
          return this.locks.with(id, () => this.recordExit(id, exit));
        },
        (err: unknown) => {
          this.watching.delete(id);
          if (err instanceof MonitorGoneError) this.monitorLost(id);
        },
      )
      .catch((err: unknown) =>
        this.deps.log.warn({ container: id, err: errorMessage(err) }, 'recording an exit failed'),
      );
  }

  /**
   * The container's conmon died (killed, OOM) without recording an exit: the
   * container may still run. From now on the runtime is polled for it, so its
   * end still shows in ListContainers and events, with the status berth's
   * process helper reaped (adoptedExit), else as unknown.
   */
  private monitorLost(id: string, context: Record<string, unknown> = {}): void {
    const record = this.store.get(id);
    if (this.closed || !record || record.finishedAtNs !== undefined || this.unmonitored.has(id)) return;
    this.deps.log.warn(
      { container: id, ...context },
      'conmon is gone and recorded no exit: polling the runtime for the container',
    );
    this.unmonitored.add(id);
    this.unmonitoredPoll ??= setInterval(() => void this.pollUnmonitored(), UNMONITORED_POLL_MS).unref();
  }

  /**
   * A process reaped by berth's process helper: when it is a container's, its
   * conmon had died (else conmon, its parent, would have reaped it) and this
   * is the one account of how it ended.
   */
  private adoptedExit(pid: number, exitCode: number): void {
    const record = this.store.all().find((r) => r.pid === pid && r.finishedAtNs === undefined);
    if (!record || this.closed) return;
    const exit: ExitInfo = { exitCode, finishedAtNs: BigInt(nowNs()), oomKilled: false };
    // Kept for a stop under way, which holds the lock and records the exit itself.
    this.adoptedExits.set(pid, exit);
    void this.locks
      .with(record.id, async () => {
        if (await this.deps.engine.conmonAlive(record.id)) return;
        await this.recordExit(record.id, exit, ADOPTED_EXIT_MESSAGE);
      })
      .catch((err: unknown) =>
        this.deps.log.warn(
          { container: record.id, err: errorMessage(err) },
          'recording an adopted exit failed',
        ),
      );
  }

  private async pollUnmonitored(): Promise<void> {
    for (const id of [...this.unmonitored]) {
      await this.locks
        .with(id, () => this.refreshExit(id))
        .catch((err: unknown) =>
          this.deps.log.warn(
            { container: id, err: errorMessage(err) },
            'polling a container without conmon failed',
          ),
        );
    }
    if (this.unmonitored.size === 0 && this.unmonitoredPoll) {
      clearInterval(this.unmonitoredPoll);
      this.unmonitoredPoll = undefined;
    }
  }

  /** Records conmon's exit of the container, if there is one. */
  private async refreshExit(id: string): Promise<void> {
    const record = this.store.get(id);
    if (!record || record.finishedAtNs !== undefined) return;
    const exit = await this.deps.engine.exitInfo(id);
    if (exit) {
      await this.recordExit(id, exit);
      return;
    }
    if (!this.unmonitored.has(id)) return;
    // No conmon will ever write its exit: ask the runtime instead.
    const state = await this.deps.engine.state(id, this.handlerOf(record)).catch(() => undefined);
    if (state && state.status !== 'stopped') return;
    const adopted = this.adoptedExits.get(record.pid);
    if (adopted) {
      await this.recordExit(id, adopted, ADOPTED_EXIT_MESSAGE);
      return;
    }
    await this.recordExit(
      id,
      { exitCode: 255, finishedAtNs: BigInt(nowNs()), oomKilled: false },
      'the container exited while it had no conmon; its exit status is unknown',
    );
  }

  /**
   * Brings the state of a container whose conmon died up to date (the usual
   * ones are kept current by the exit watch); cheap for the others.
   */
  async refresh(idOrPrefix: string): Promise<ContainerRecord> {
    const record = this.get(idOrPrefix);
    if (!this.unmonitored.has(record.id) || record.finishedAtNs !== undefined) return record;
    await this.locks.with(record.id, () => this.refreshExit(record.id));
    return this.get(record.id);
  }

  private async recordExit(id: string, exit: ExitInfo, message = ''): Promise<void> {
    const record = this.store.get(id);
    if (!record || record.finishedAtNs !== undefined) return;
    this.adoptedExits.delete(record.pid);
    const reason = exit.oomKilled ? 'OOMKilled' : exit.exitCode === 0 ? 'Completed' : 'Error';
    await this.store.put({
      ...record,
      finishedAtNs: exit.finishedAtNs.toString(),
      exitCode: exit.exitCode,
      reason,
      message,
    });
    this.deps.counters?.containerExited(reason);
    this.watching.get(id)?.abort();
    this.watching.delete(id);
    this.unmonitored.delete(id);
  }

  /**
   * Start-up: half-made containers are undone; the others get the state
   * conmon and the runtime report now (exits that happened while berth was
   * down included); running ones are watched again. Nothing is re-created.
   */
  private async reconcile(): Promise<void> {
    for (const record of this.store.all()) {
      const log = this.deps.log.child({ container: record.id });
      try {
        if (record.phase === 'creating') {
          log.info('removing a container whose creation was interrupted');
          await this.removeLocked(record.id);
          continue;
        }
        try {
          this.deps.sandboxes.names.reserve(record.name, record.id, 'container name');
        } catch (err) {
          log.error({ err: errorMessage(err) }, 'container name clash at start-up');
        }
        if (record.finishedAtNs !== undefined) continue;
        const exit = await this.deps.engine.exitInfo(record.id);
        if (exit) {
          await this.recordExit(record.id, exit);
          continue;
        }
        if (await this.deps.engine.conmonAlive(record.id)) {
          if (record.startedAtNs === undefined) await this.adoptStart(record);
          this.watchExit(record.id);
          continue;
        }
        let status: string | undefined;
        try {
          status = (await this.deps.engine.state(record.id, this.handlerOf(record)))?.status;
        } catch (err) {
          log.warn({ err: errorMessage(err) }, 'runtime state unavailable at start-up');
        }
        if (status === 'running' || status === 'created' || status === 'paused') {
          // Its conmon is gone but the process lives: keep it; Stop still works through the runtime.
          this.monitorLost(record.id, { runtimeState: status });
          continue;
        }
        await this.recordExit(
          record.id,
          { exitCode: 255, finishedAtNs: BigInt(nowNs()), oomKilled: false },
          'the container and its conmon were gone when berth started; no exit status was recorded',
        );
      } catch (err) {
        log.error({ err: errorMessage(err) }, 'reconciling a container failed');
      }
    }
  }

  /**
   * A StartContainer cut short by a crash after the runtime started the
   * process but before the record said so: the runtime's word wins.
   */
  private async adoptStart(record: ContainerRecord): Promise<void> {
    const state = await this.deps.engine.state(record.id, this.handlerOf(record)).catch(() => undefined);
    if (state?.status !== 'running' && state?.status !== 'paused') return;
    const startedAtNs = (await processStartNs(state.pid)) ?? nowNs();
    this.deps.log.info(
      { container: record.id },
      'container was started before berth stopped; recording the start',
    );
    await this.store.put({ ...record, startedAtNs });
  }

  // ---- exec, resources, logs ----

  async execSync(
    idOrPrefix: string,
    cmd: string[],
    timeoutSeconds: number,
    signal?: AbortSignal,
  ): Promise<ExecSyncResult> {
    const record = this.get(idOrPrefix);
    if (cmd.length === 0)
      throw new InvalidArgumentError(`ExecSync in ${describeContainer(record)}: the command is empty`);
    if (stateOf(record) !== 'running') {
      throw new FailedPreconditionError(
        `ExecSync in ${describeContainer(record)}: the container is ${stateOf(record)}, not running`,
      );
    }
    const proc = await this.deps.engine.exec({
      id: record.id,
      handler: this.handlerOf(record),
      args: cmd,
      tty: false,
      timeoutMs: timeoutSeconds > 0 ? timeoutSeconds * 1000 : undefined,
    });
    proc.stdin?.end();
    const onAbort = () => proc.kill('SIGKILL');
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      const [stdout, stderr, exit] = await Promise.all([
        collectCapped(proc.stdout, EXEC_SYNC_MAX_BYTES),
        collectCapped(proc.stderr, EXEC_SYNC_MAX_BYTES),
        proc.exited,
      ]);
      if (exit.timedOut) {
        throw new DeadlineExceededError(
          `ExecSync in ${describeContainer(record)}: command ${JSON.stringify(cmd)} timed out after ${timeoutSeconds}s and was killed`,
        );
      }
      // Both streams must fit one gRPC message (server.max_message_bytes): stdout gives way first.
      const room = this.deps.config().server.max_message_bytes - EXEC_SYNC_FRAMING_BYTES;
      const err = stderr.subarray(0, Math.max(0, room));
      const out = stdout.subarray(0, Math.max(0, room - err.length));
      return { stdout: out, stderr: err, exitCode: exit.exitCode };
    } finally {
      signal?.removeEventListener('abort', onAbort);
    }
  }

  async updateResources(idOrPrefix: string, linux: LinuxContainerResources | undefined): Promise<void> {
    const id = this.get(idOrPrefix).id;
    await this.locks.with(id, async () => {
      await this.refreshExit(id);
      const record = this.get(id);
      if (stateOf(record) === 'exited') {
        throw new FailedPreconditionError(
          `UpdateContainerResources: ${describeContainer(record)} has exited`,
        );
      }
      if (!linux) return;
      const resources = this.deps.resources(linux, this.deps.specHost, describeContainer(record));
      await this.deps.engine.update(id, this.handlerOf(record), resources as Record<string, unknown>);
      await this.store.put({ ...record, resources: LinuxContainerResources.toJSON(linux) });
    });
  }

  async reopenLog(idOrPrefix: string): Promise<void> {
    const record = this.get(idOrPrefix);
    await this.refreshExit(record.id);
    if (stateOf(this.get(record.id)) !== 'running') {
      throw new FailedPreconditionError(`ReopenContainerLog: ${describeContainer(record)} is not running`);
    }
    await this.deps.engine.reopenLog(record.id);
  }

  /** Verbose ContainerStatus info: pid, sandbox, runtime spec and what berth keeps about it. */
  async verboseInfo(record: ContainerRecord): Promise<Record<string, string>> {
    let runtimeSpec: unknown;
    try {
      runtimeSpec = JSON.parse(await readFile(join(record.bundleDir, 'config.json'), 'utf8'));
    } catch {
      runtimeSpec = undefined;
    }
    const info = {
      sandboxID: record.podSandboxId,
      pid: stateOf(record) === 'exited' ? 0 : record.pid,
      conmonPid: await this.deps.engine.conmonPid(record.id).catch(() => 0),
      runtimeHandler: record.handler,
      rootfs: rootfsPaths(record.containerDir).merged,
      bundle: record.bundleDir,
      imageID: record.imageId,
      config: record.config,
      runtimeSpec,
    };
    return { info: JSON.stringify(info) };
  }

  /** Daemon shutdown: stop watching exits; containers keep running under conmon. */
  close(): void {
    this.closed = true;
    for (const c of this.watching.values()) c.abort();
    this.watching.clear();
    if (this.unmonitoredPoll) clearInterval(this.unmonitoredPoll);
    this.unmonitoredPoll = undefined;
  }
}

/** Mount paths must be absolute and free of '..' (CRI-O and containerd refuse them too). */
function validateMounts(mounts: Mount[], name: string): void {
  for (const m of mounts) {
    for (const [what, path] of [
      ['container_path', m.containerPath],
      ['host_path', m.hostPath],
    ] as const) {
      if (what === 'host_path' && path === '' && m.image) continue;
      if (!path || !isAbsolute(path)) {
        throw new InvalidArgumentError(
          `container ${name}: mount ${what} ${JSON.stringify(path)} is not an absolute path`,
        );
      }
      if (path.split('/').includes('..')) {
        throw new InvalidArgumentError(
          `container ${name}: mount ${what} ${JSON.stringify(path)} contains '..'`,
        );
      }
    }
  }
}

/** Reads a stream to its end keeping at most `max` bytes (the rest is drained so the writer never blocks). */
async function collectCapped(stream: NodeJS.ReadableStream | null, max: number): Promise<Buffer> {
  if (!stream) return Buffer.alloc(0);
  const chunks: Buffer[] = [];
  let kept = 0;
  for await (const chunk of stream) {
    const buf = typeof chunk === 'string' ? Buffer.from(chunk) : (chunk as Buffer);
    if (kept < max) {
      const part = buf.subarray(0, max - kept);
      chunks.push(part);
      kept += part.length;
    }
  }
  return Buffer.concat(chunks);
}

/**
 * When a process started, in ns since the epoch: /proc/<pid>/stat field 22
 * (clock ticks since boot, USER_HZ = 100 on Linux) plus the boot time.
 */
async function processStartNs(pid: number): Promise<string | undefined> {
  try {
    const [stat, procStat] = await Promise.all([
      readFile(`/proc/${pid}/stat`, 'utf8'),
      readFile('/proc/stat', 'utf8'),
    ]);
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const ticks = BigInt(fields[19]);
    const btime = /^btime (\d+)$/m.exec(procStat);
    if (!btime) return undefined;
    return (BigInt(btime[1]) * 1_000_000_000n + ticks * 10_000_000n).toString();
  } catch {
    return undefined;
  }
}
