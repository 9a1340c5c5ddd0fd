/**
 * Pod sandboxes: an infra (pause) container under conmon holding the pod's
 * namespaces, or (runtime.drop_infra, see pinned.ts) those namespaces pinned
 * by bind mounts; its network (CNI), pod files and /dev/shm, recorded
 * crash-safely.
 *
 * RunPodSandbox first commits a 'creating' record naming everything it is
 * about to make, updates it as namespaces appear, and commits 'ready' last; a
 * failure undoes every step, and a crash is undone at the next start-up from
 * that record. Pods are never re-created after a restart.
 */
import { mkdir, readFile, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { runtimeKind } from '../oci/runtime-kind.js';
import type { BerthConfig } from '../config/schema.js';
import {
  BerthError,
  FailedPreconditionError,
  InternalError,
  InvalidArgumentError,
  errnoCode,
  errorMessage,
} from '../errors.js';
import {
  NamespaceMode,
  PodSandboxConfig,
  LinuxPodSandboxConfig,
  LinuxContainerResources,
  Protocol,
  type PodSandboxFilter,
  type RunPodSandboxRequest,
} from '../generated/api.js';
import type { ImageManager } from '../image/manager.js';
import { Puller } from '../image/pull/puller.js';
import type { Logger } from '../log.js';
import { validateCgroupParent } from '../oci/cgroup-driver.js';
import { configuredHandlers, resolveHandler } from '../oci/handlers.js';
import { buildSandboxSpec, type SpecHost } from '../oci/spec/index.js';
import { MonitorGoneError, type OciEngine, type RuntimeHandler } from '../oci/types.js';
import { newId, matchPrefix, resolvePrefix } from '../state/ids.js';
import { KeyedMutex } from '../state/lock.js';
import { NameRegistry } from '../state/names.js';
import { RecordStore, type RecordListener } from '../state/store.js';
import { mountOverlay, mountShm, unmountAll } from './mounts.js';
import type { HostPortMapping, PodIdentity, PodNetwork } from './network-types.js';
import { ensureBuiltinPause, resolvePause } from './pause/index.js';
import { validatePodSysctls } from './pod-setup.js';
import { listNetns, netnsPath as podNetnsPath } from './network/index.js';
import { podHostname, validateDnsConfig, writePodFiles, writePodHosts } from './pod-files.js';
import { infraNeededBecause, pinNamespaces, pinnedAlive, pinnedPaths, unpinNamespaces } from './pinned.js';
import { isNetns } from './network/netns.js';
import { podUserns, type PodUserns } from '../oci/userns/mappings.js';
import {
  checkUsernsSupportAtStart,
  mountInfraRootfs,
  pinPodNamespaces,
  requireUsernsSupport,
} from './userns.js';
import {
  sandboxName,
  type SandboxAccess,
  type SandboxHook,
  type SandboxNamespacePaths,
  type SandboxNamespaces,
  type SandboxRecord,
} from './types.js';

/** oom_score_adj of the infra process (CRI-O's and kubelet's PodInfraOOMAdj). */
const INFRA_OOM_SCORE_ADJ = -998;
/** How long a killed infra may take to be reported gone. */
const INFRA_EXIT_TIMEOUT_MS = 10_000;
/** How often the runtime is asked about infras whose conmon is gone. */
const UNMONITORED_POLL_MS = 2_000;

export interface SandboxManagerOptions {
  config: () => BerthConfig;
  log: Logger;
  engine: OciEngine & {
    /** True while the container's conmon runs: only then will its exit be recorded. */
    conmonAlive(id: string): Promise<boolean>;
  };
  network: PodNetwork & {
    /** CNI DEL of attachments whose pod no record names (start-up). */
    sweepAttachments(known: ReadonlySet<string>): Promise<string[]>;
  };
  images: () => ImageManager;
  specHost: SpecHost;
}

/** Wall-clock nanoseconds (ms precision from Date, the rest from hrtime so close events stay ordered). */
function nowNs(): string {
  return (BigInt(Date.now()) * 1_000_000n + (process.hrtime.bigint() % 1_000_000n)).toString();
}

function parseRecord(value: unknown): SandboxRecord {
  const r = value as Partial<SandboxRecord>;
  if (
    typeof r !== 'object' ||
    r === null ||
    r.version !== 1 ||
    typeof r.id !== 'string' ||
    typeof r.name !== 'string' ||
    typeof r.podDir !== 'string' ||
    typeof r.infra !== 'object' ||
    typeof r.handler !== 'object' ||
    !['creating', 'ready', 'notready'].includes(r.phase as string)
  ) {
    throw new Error('not a version 1 sandbox record');
  }
  return r as SandboxRecord;
}

/** The kernel's random ID of this boot ('' where unreadable: then only the mounts tell). */
async function readBootId(): Promise<string> {
  try {
    return (await readFile('/proc/sys/kernel/random/boot_id', 'utf8')).trim();
  } catch {
    return '';
  }
}

function mode(value: NamespaceMode | undefined): 'pod' | 'container' | 'node' | 'target' {
  switch (value ?? NamespaceMode.POD) {
    case NamespaceMode.NODE:
      return 'node';
    case NamespaceMode.CONTAINER:
      return 'container';
    case NamespaceMode.TARGET:
      return 'target';
    default:
      return 'pod';
  }
}

function podNamespaces(config: PodSandboxConfig): SandboxNamespaces {
  const options = config.linux?.securityContext?.namespaceOptions;
  const network = mode(options?.network);
  const ipc = mode(options?.ipc);
  const pid = mode(options?.pid);
  if (pid === 'target') {
    throw new InvalidArgumentError('pod sandbox PID namespace mode TARGET is only valid for containers');
  }
  return {
    network: network === 'node' ? 'node' : 'pod',
    ipc: ipc === 'node' ? 'node' : 'pod',
    pid,
  };
}

function portMappings(config: PodSandboxConfig): HostPortMapping[] {
  const out: HostPortMapping[] = [];
  for (const pm of config.portMappings) {
    // kubelet lists container ports without a host port too: nothing to map.
    if (pm.hostPort <= 0) continue;
    if (pm.hostPort > 65535 || pm.containerPort <= 0 || pm.containerPort > 65535) {
      throw new InvalidArgumentError(
        `port mapping ${pm.hostPort}->${pm.containerPort}: ports must be between 1 and 65535`,
      );
    }
    const protocol = pm.protocol === Protocol.UDP ? 'udp' : pm.protocol === Protocol.SCTP ? 'sctp' : 'tcp';
    out.push({ protocol, containerPort: pm.containerPort, hostPort: pm.hostPort, hostIP: pm.hostIp });
  }
  return out;
}

/**
 * Whether CNI ADD must finish before the infra starts. runc and crun only
 * join the netns file, so both can run at once; other runtimes (runsc copies
 * the netns set-up when its sandbox boots, VM runtimes wire the guest) wait.
 */
function attachesBeforeStart(handler: RuntimeHandler): boolean {
  const kind = runtimeKind(handler);
  return handler.type !== 'oci' || (kind !== 'runc' && kind !== 'crun');
}

function identity(record: SandboxRecord): PodIdentity {
  return {
    id: record.id,
    name: record.metadata.name,
    namespace: record.metadata.namespace,
    uid: record.metadata.uid,
  };
}

export class SandboxManager implements SandboxAccess {
  readonly names = new NameRegistry('name');
  private readonly locks = new KeyedMutex();
  private readonly stopHooks: SandboxHook[] = [];
  private readonly removeHooks: SandboxHook[] = [];
  /** Aborts the exit watch of each running infra. */
  private readonly watches = new Map<string, AbortController>();
  /** Running infras whose conmon died: no exit file will come, so the runtime is polled. */
  private readonly unmonitored = new Set<string>();
  private pollTimer?: NodeJS.Timeout;
  private builtinPause?: Promise<string>;
  private closed = false;

  private constructor(
    private readonly options: SandboxManagerOptions,
    private readonly store: RecordStore<SandboxRecord>,
    private readonly log: Logger,
    /** This boot's ID: pods without an infra are recorded with it. */
    private readonly bootId: string,
  ) {}

  /** Loads the records and reconciles them with reality (start-up). */
  static async open(options: SandboxManagerOptions): Promise<SandboxManager> {
    const log = options.log.child({ component: 'sandbox' });
    const root = options.config().root;
    const store = await RecordStore.open(join(root, 'state', 'sandboxes'), 'sandbox', parseRecord, log);
    const manager = new SandboxManager(options, store, log, await readBootId());
    // A pod's infra root is an overlay of the pause image's layers until the pod is removed.
    options.images().setInUseChecker((imageId) => {
      const pod = store.all().find((r) => r.infra.imageId === imageId);
      return pod && `${pod.id} (${pod.name})`;
    }, 'pod sandbox');
    await manager.reconcile();
    checkUsernsSupportAtStart(root, log);
    return manager;
  }

  private get config(): BerthConfig {
    return this.options.config();
  }

  private sandboxesDir(): string {
    return join(this.config.root, 'sandboxes');
  }

  // ---- SandboxAccess -------------------------------------------------------

  find(idOrPrefix: string): SandboxRecord | undefined {
    const id = matchPrefix(this.visibleIds(), idOrPrefix, 'pod sandbox');
    return id === undefined ? undefined : this.store.get(id);
  }

  get(idOrPrefix: string): SandboxRecord {
    return this.store.get(resolvePrefix(this.visibleIds(), idOrPrefix, 'pod sandbox'))!;
  }

  list(): SandboxRecord[] {
    return this.store.all().filter((r) => r.phase !== 'creating');
  }

  handlerOf(sandbox: SandboxRecord): RuntimeHandler {
    return configuredHandlers(this.config).get(sandbox.runtimeHandler) ?? sandbox.handler;
  }

  namespacePaths(sandbox: SandboxRecord): SandboxNamespacePaths {
    const proc = (ns: string): string => `/proc/${sandbox.infra.pid}/ns/${ns}`;
    const paths: SandboxNamespacePaths = {};
    if (sandbox.namespaces.network === 'pod') {
      paths.network = sandbox.netnsPath;
      paths.uts = sandbox.pinned ? sandbox.pinned.uts : proc('uts');
    }
    if (sandbox.namespaces.ipc === 'pod') paths.ipc = sandbox.pinned ? sandbox.pinned.ipc : proc('ipc');
    if (sandbox.namespaces.pid === 'pod') paths.pid = proc('pid');
    if (sandbox.userns) paths.user = sandbox.userns.path;
    return paths;
  }

  withLock<T>(sandboxId: string, fn: () => Promise<T>): Promise<T> {
    return this.locks.with(sandboxId, fn);
  }

  onStop(hook: SandboxHook): void {
    this.stopHooks.push(hook);
  }

  onRemove(hook: SandboxHook): void {
    this.removeHooks.push(hook);
  }

  /** Whether the pod's infra is running as far as berth knows. */
  isReady(record: SandboxRecord): boolean {
    return record.phase === 'ready';
  }

  private visibleIds(): string[] {
    return this.list().map((r) => r.id);
  }

  // ---- RunPodSandbox -------------------------------------------------------

  async run(request: RunPodSandboxRequest): Promise<string> {
    const config = request.config;
    const metadata = config?.metadata;
    if (!config || !metadata) throw new InvalidArgumentError('RunPodSandbox: config.metadata is missing');
    for (const key of ['name', 'namespace', 'uid'] as const) {
      if (!metadata[key]) throw new InvalidArgumentError(`RunPodSandbox: metadata.${key} is empty`);
    }
    const handler = resolveHandler(this.config, request.runtimeHandler);
    const namespaces = podNamespaces(config);
    const ports = portMappings(config);
    const cgroupParent = validateCgroupParent(
      config.linux?.cgroupParent ?? '',
      this.options.specHost.cgroupDriver,
    );
    const sysctls = validatePodSysctls(this.config.runtime.default_sysctls, config.linux?.sysctls ?? {}, {
      hostNetwork: namespaces.network === 'node',
      hostIpc: namespaces.ipc === 'node',
    });
    const hostname = podHostname(metadata.name, config.hostname);
    if (config.dnsConfig) validateDnsConfig(metadata.name, config.dnsConfig);
    const userns = podUserns(config.linux?.securityContext?.namespaceOptions, `pod sandbox ${metadata.name}`);
    if (userns) await requireUsernsSupport(this.config.root, handler, `pod sandbox ${metadata.name}`);
    const infraReason = infraNeededBecause(this.config, handler, { namespaces, userns: !!userns, sysctls });
    const meta = {
      name: metadata.name,
      namespace: metadata.namespace,
      uid: metadata.uid,
      attempt: metadata.attempt,
    };
    const id = newId();
    const name = sandboxName(meta);
    this.names.reserve(name, id, 'pod sandbox name');
    try {
      return await this.locks.with(id, () =>
        this.create(id, name, meta, request, handler, {
          namespaces,
          ports,
          cgroupParent,
          sysctls,
          hostname,
          userns,
          infraReason,
        }),
      );
    } catch (err) {
      this.names.release(name, id);
      throw err;
    }
  }

  private async create(
    id: string,
    name: string,
    metadata: SandboxRecord['metadata'],
    request: RunPodSandboxRequest,
    handler: RuntimeHandler,
    checked: {
      namespaces: SandboxNamespaces;
      ports: HostPortMapping[];
      cgroupParent: string;
      sysctls: Record<string, string>;
      hostname: string;
      userns?: PodUserns;
      /** Why the pod gets an infra container; undefined: it gets none (runtime.drop_infra). */
      infraReason?: string;
    },
  ): Promise<string> {
    const { namespaces, ports, cgroupParent, sysctls, hostname } = checked;
    const config = request.config!;
    const podDir = join(this.sandboxesDir(), id);
    const hostNetwork = namespaces.network === 'node';
    const record: SandboxRecord = {
      version: 1,
      id,
      name,
      metadata,
      labels: { ...config.labels },
      annotations: { ...config.annotations },
      config: PodSandboxConfig.toJSON(config),
      phase: 'creating',
      createdAtNs: nowNs(),
      runtimeHandler: handler.name,
      handler,
      namespaces,
      ips: [],
      portMappings: ports,
      podDir,
      logDirectory: config.logDirectory,
      shmPath: namespaces.ipc === 'node' ? '/dev/shm' : join(podDir, 'shm'),
      shmMounted: namespaces.ipc !== 'node',
      hostname,
      hostnamePath: join(podDir, 'hostname'),
      resolvConfPath: join(podDir, 'resolv.conf'),
      hostsPath: join(podDir, 'hosts'),
      cgroupParent,
      sysctls,
      infra: { id, pid: 0, bundleDir: join(podDir, 'bundle'), image: '', rootfs: '' },
      // Fixed by the pod ID (a pinned user namespace's netns too), so the intent names it and no
      // second record write is needed once it exists. Undo and start-up cope with it missing:
      // DEL runs with an empty CNI_NETNS and removing a netns that is not there is a no-op.
      netnsPath: hostNetwork ? undefined : podNetnsPath(this.config.run_root, id),
      ...(checked.userns ? { userns: { ...checked.userns, path: join(podDir, 'userns') } } : {}),
      // Fixed by the pod dir, so the intent names them; undo unmounts the pod dir anyway.
      ...(checked.infraReason === undefined
        ? { pinned: pinnedPaths(podDir, namespaces), bootId: this.bootId }
        : {}),
    };
    const pinnedNs = record.pinned;
    const started = Date.now();
    const steps: Record<string, number> = {};
    const timed = async <T>(step: string, fn: () => Promise<T>): Promise<T> => {
      const t0 = performance.now();
      try {
        return await fn();
      } finally {
        steps[step] = Math.round((performance.now() - t0) * 10) / 10;
      }
    };
    // The intent: a crash from here on is undone at start-up from this record.
    await timed('intent', () => this.store.put(record)).catch((err: unknown) => {
      throw new InternalError(`RunPodSandbox ${name}: ${errorMessage(err)}`, { cause: err });
    });
    try {
      await mkdir(podDir, { recursive: true, mode: 0o711 });
      // A pod user namespace comes first: it owns the netns, and the infra's rootfs is mapped through it.
      const pinned = record.userns
        ? timed('userns', () =>
            pinPodNamespaces(this.config.run_root, podDir, id, record.userns!, !hostNetwork),
          )
        : undefined;
      // Awaited by both branches below; this only keeps an early failure of one from going unhandled.
      pinned?.catch(() => undefined);
      // Files and mounts on one side, netns + CNI (the slow part) on the other.
      const local = (async () => {
        await Promise.all([
          record.shmMounted &&
            timed('shm', async () => {
              await mkdir(record.shmPath, { mode: 0o1777 });
              await mountShm(record.shmPath);
            }),
          timed('files', () =>
            writePodFiles({ podId: id, podDir, hostname, dns: config.dnsConfig, hostNetwork, ips: [] }),
          ),
          pinnedNs && timed('pin', () => pinNamespaces(podDir, pinnedNs, hostname)),
        ]);
        if (pinnedNs) return undefined;
        const pause = await timed('pause', () =>
          resolvePause(
            this.config,
            this.options.images(),
            () => this.pauseRootfs(),
            (ref) => this.pullPause(ref),
          ),
        );
        record.infra.image = pause.image;
        record.infra.imageId = pause.imageId;
        if (record.userns) {
          await pinned;
          record.infra.rootfs = await timed('overlay', () =>
            mountInfraRootfs(podDir, pause.lowerDirs, record.userns!),
          );
        } else if (pause.image === 'builtin') {
          // Shared by every pod: it already has every mount point the runtime needs.
          record.infra.rootfs = pause.lowerDirs[0];
        } else {
          record.infra.rootfs = join(podDir, 'rootfs');
          const upper = join(podDir, 'rootfs-upper');
          const work = join(podDir, 'rootfs-work');
          await Promise.all([mkdir(record.infra.rootfs), mkdir(upper), mkdir(work)]);
          await timed('overlay', () => mountOverlay(pause.lowerDirs, upper, work, record.infra.rootfs));
        }
        return pause;
      })();
      const netns = (async () => {
        if (hostNetwork) return;
        const netnsPath = pinned
          ? (await pinned)!
          : await timed('netns', () => this.options.network.createNetns(id));
        if (record.netnsPath === netnsPath) return;
        record.netnsPath = netnsPath;
        await timed('netnsRecord', () => this.store.put(record));
      })();
      const attach = async (): Promise<void> => {
        if (hostNetwork) return;
        const status = await timed('cni', () =>
          this.options.network.attach(identity(record), record.netnsPath!, ports),
        );
        record.network = { name: status.networkName, result: status.result };
        record.ips = status.ips;
        // While the infra may still be starting: its hosts file is only read by containers.
        await timed('hosts', () => writePodHosts(podDir, hostname, record.ips));
      };
      // net.* sysctls may name eth0 (net.ipv4.conf.eth0.*): runc writes them after CNI made it.
      const netSysctls = Object.keys(sysctls).some((key) => key.startsWith('net.'));
      // runc's pause never looks at its network: CNI ADD (the slowest step) starts as soon as
      // the netns exists and runs beside the files, mounts and the infra's start-up.
      const attachEarly = !attachesBeforeStart(handler) && !netSysctls;
      const attached = attachEarly ? netns.then(attach) : undefined;
      // Awaited below; this only keeps a failure before then from going unhandled.
      attached?.catch(() => undefined);
      // Both finish before anything is undone, so undo never races a running step.
      const [localResult, netnsResult] = await Promise.allSettled([local, netns]);
      if (localResult.status === 'rejected' || netnsResult.status === 'rejected') {
        await attached?.catch(() => undefined);
        throw localResult.status === 'rejected'
          ? localResult.reason
          : (netnsResult as PromiseRejectedResult).reason;
      }
      const pause = localResult.value;
      const infra = async (): Promise<void> => {
        if (!pause) return; // no infra: its namespaces are pinned
        const spec = await buildSandboxSpec({
          id,
          config,
          rootfs: record.infra.rootfs,
          args: pause.args,
          env: pause.env,
          hostname,
          netnsPath: record.netnsPath,
          usernsPath: record.userns?.path,
          shmPath: record.shmMounted ? record.shmPath : undefined,
          sysctls,
          cgroupParent,
          oomScoreAdj: INFRA_OOM_SCORE_ADJ,
          host: this.options.specHost,
        });
        const monitorCgroup = this.config.runtime.handlers[handler.name]?.monitor_cgroup || cgroupParent;
        const { pid } = await timed('create', () =>
          this.options.engine.create({
            id,
            handler,
            bundleDir: record.infra.bundleDir,
            spec,
            logPath: '',
            stdin: false,
            stdinOnce: false,
            tty: false,
            monitorCgroup: monitorCgroup || undefined,
          }),
        );
        record.infra.pid = pid;
        await timed('start', () => this.options.engine.start(id, handler));
      };
      if (attached) {
        const [attachResult, started] = await Promise.allSettled([attached, infra()]);
        if (attachResult.status === 'rejected') throw attachResult.reason;
        if (started.status === 'rejected') throw started.reason;
      } else {
        await attach();
        await infra();
      }
      record.phase = 'ready';
      await timed('commit', () => this.store.put(record));
    } catch (err) {
      this.log.warn({ id, name, err: errorMessage(err) }, 'RunPodSandbox failed; undoing');
      await this.undo(record).catch((undoErr: unknown) =>
        this.log.error({ id, err: errorMessage(undoErr) }, 'undoing a failed RunPodSandbox left debris'),
      );
      if (err instanceof BerthError) throw err;
      throw new FailedPreconditionError(
        `running pod sandbox ${name} on runtime handler ${JSON.stringify(handler.name)}: ${errorMessage(err)}`,
        { cause: err },
      );
    }
    if (!pinnedNs) this.watch(record);
    this.log.info(
      {
        id,
        name,
        handler: handler.name,
        infra: checked.infraReason ?? 'none: its namespaces are pinned',
        ips: record.ips,
        ms: Date.now() - started,
        steps,
      },
      'pod sandbox ready',
    );
    return id;
  }

  /** Pulls runtime.pause_image through the daemon's puller, so pods and PullImage share downloads and pools. */
  private pullPause(ref: string): Promise<unknown> {
    const images = this.options.images();
    return Puller.for(images, () => this.config, this.log.child({ component: 'pull' })).pull(ref);
  }

  /** The built-in pause rootfs, built once per daemon. */
  private pauseRootfs(): Promise<string> {
    // Older builds stay while pods still run on them (a catatonit upgrade between runs).
    const inUse = new Set(this.store.all().map((r) => r.infra.rootfs));
    this.builtinPause ??= ensureBuiltinPause(this.config.root, undefined, inUse).catch((err: unknown) => {
      this.builtinPause = undefined;
      throw err;
    });
    return this.builtinPause;
  }

  /**
   * Removes everything a (possibly half-made) record names: infra, network,
   * netns, mounts, pod dir, record. Each step tolerates what is already gone.
   */
  private async undo(record: SandboxRecord): Promise<void> {
    const problems: string[] = [];
    const step = async (what: string, fn: () => Promise<unknown>): Promise<void> => {
      try {
        await fn();
      } catch (err) {
        problems.push(`${what}: ${errorMessage(err)}`);
      }
    };
    const { engine, network } = this.options;
    if (!record.pinned) {
      await step('delete infra', () => engine.delete(record.id, record.handler, true));
      await step('conmon files', () => engine.cleanup(record.id));
    }
    if (record.namespaces.network === 'pod') {
      await step('CNI DEL', () =>
        network.detach(identity(record), record.netnsPath, record.portMappings, record.network?.result),
      );
    }
    if (record.netnsPath) await step('netns', () => network.removeNetns(record.netnsPath!));
    await step('unmount', () => unmountAll(record.podDir));
    await step('pod dir', () => rm(record.podDir, { recursive: true, force: true }));
    if (problems.length > 0) {
      // Keep the record: the next start-up retries the clean-up.
      throw new Error(problems.join('; '));
    }
    await this.store.delete(record.id);
  }

  // ---- exits ----------------------------------------------------------------

  /** Marks the pod NOTREADY when its infra exits on its own. */
  private watch(record: SandboxRecord): void {
    if (this.closed) return;
    this.watches.get(record.id)?.abort();
    const controller = new AbortController();
    this.watches.set(record.id, controller);
    this.options.engine.waitExit(record.id, controller.signal).then(
      (exit) =>
        this.locks.with(record.id, async () => {
          if (this.watches.get(record.id) === controller) this.watches.delete(record.id);
          const current = this.store.get(record.id);
          if (!current || current.phase !== 'ready') return;
          this.log.warn({ id: record.id, exitCode: exit.exitCode }, 'pod sandbox infra exited: NOTREADY');
          await this.store.put({ ...current, phase: 'notready' });
        }),
      (err: unknown) => {
        if (this.watches.get(record.id) === controller) this.watches.delete(record.id);
        if (err instanceof MonitorGoneError) this.infraMonitorLost(record.id);
      },
    );
  }

  /** The infra's conmon is gone (it recorded no exit): the runtime is polled until the infra ends. */
  private infraMonitorLost(id: string): void {
    if (this.closed || this.unmonitored.has(id)) return;
    this.log.warn({ id }, 'pod sandbox infra runs without its conmon: polling the runtime');
    this.unmonitored.add(id);
    this.pollTimer ??= setInterval(() => void this.pollUnmonitored(), UNMONITORED_POLL_MS).unref();
  }

  private unwatch(id: string): void {
    this.watches.get(id)?.abort();
    this.watches.delete(id);
    this.unmonitored.delete(id);
  }

  /** NOTREADY for unmonitored infras the runtime no longer runs. */
  private async pollUnmonitored(): Promise<void> {
    for (const id of [...this.unmonitored]) {
      const record = this.store.get(id);
      if (!record || record.phase !== 'ready') {
        this.unmonitored.delete(id);
        continue;
      }
      const state = await this.options.engine.state(id, record.handler).catch(() => undefined);
      if (state?.status === 'running') continue;
      await this.locks.with(id, async () => {
        const current = this.store.get(id);
        if (!this.unmonitored.delete(id) || !current || current.phase !== 'ready') return;
        this.log.warn(
          { id, runtimeState: state?.status ?? 'unknown' },
          'pod sandbox infra is gone: NOTREADY',
        );
        await this.store.put({ ...current, phase: 'notready' });
      });
    }
  }

  // ---- StopPodSandbox / RemovePodSandbox ----------------------------------

  /** Stops containers (hooks), the infra, the network; keeps the record. Unknown: nothing to do. */
  async stop(idOrPrefix: string): Promise<void> {
    const found = this.find(idOrPrefix);
    if (!found) return;
    await this.locks.with(found.id, async () => {
      const record = this.store.get(found.id);
      if (record) await this.stopLocked(record);
    });
  }

  private async stopLocked(record: SandboxRecord): Promise<void> {
    for (const hook of this.stopHooks) await hook(record);
    const { engine, network } = this.options;
    this.unwatch(record.id);
    const state = record.pinned ? undefined : await engine.state(record.id, record.handler);
    if (state && state.status !== 'stopped') {
      await engine.kill(record.id, record.handler, 'SIGKILL', true);
      await this.waitInfraGone(record);
    }
    let next: SandboxRecord = record;
    if (record.phase !== 'notready' || !record.stoppedAtNs) {
      next = { ...record, phase: 'notready', stoppedAtNs: record.stoppedAtNs ?? nowNs() };
      await this.store.put(next);
    }
    if (next.network || (next.namespaces.network === 'pod' && next.netnsPath)) {
      await network.detach(identity(next), next.netnsPath, next.portMappings, next.network?.result);
      if (next.netnsPath) await network.removeNetns(next.netnsPath);
      next = { ...next, network: undefined, netnsPath: undefined };
      await this.store.put(next);
    }
    // Containers are stopped: the pod's /dev/shm and pinned namespaces can go now (remove retries).
    if (next.shmMounted) await unmountAll(next.shmPath);
    if (next.pinned) await unpinNamespaces(next.podDir);
  }

  /**
   * After SIGKILL: conmon's exit file when conmon runs (it reaps the infra),
   * else the runtime's state, polled; either way within INFRA_EXIT_TIMEOUT_MS.
   */
  private async waitInfraGone(record: SandboxRecord): Promise<void> {
    const { engine } = this.options;
    const deadline = Date.now() + INFRA_EXIT_TIMEOUT_MS;
    if (await engine.conmonAlive(record.id)) {
      if ((await engine.exitInfo(record.id)) !== undefined) return;
      try {
        await engine.waitExit(record.id, AbortSignal.timeout(INFRA_EXIT_TIMEOUT_MS));
        return;
      } catch {
        // conmon died meanwhile: the runtime decides below.
      }
    }
    for (;;) {
      const now = await engine.state(record.id, record.handler);
      if (!now || now.status === 'stopped') return;
      if (Date.now() > deadline) {
        throw new FailedPreconditionError(
          `pod sandbox ${record.id}: infra still ${now.status} ${INFRA_EXIT_TIMEOUT_MS} ms after SIGKILL`,
        );
      }
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }

  /** Stops if needed, removes containers (hooks), the infra, files and the record. Idempotent. */
  async remove(idOrPrefix: string): Promise<void> {
    const found = this.find(idOrPrefix);
    if (!found) return;
    await this.locks.with(found.id, async () => {
      const record = this.store.get(found.id);
      if (!record) return;
      await this.stopLocked(record);
      const current = this.store.get(record.id)!;
      for (const hook of this.removeHooks) await hook(current);
      if (!current.pinned) {
        await this.options.engine.delete(current.id, current.handler, true);
        await this.options.engine.cleanup(current.id);
      }
      await unmountAll(current.podDir);
      await rm(current.podDir, { recursive: true, force: true });
      await this.store.delete(current.id);
      this.names.release(current.name, current.id);
      this.log.info({ id: current.id, name: current.name }, 'pod sandbox removed');
    });
  }

  // ---- ListPodSandbox ------------------------------------------------------

  filter(filter: PodSandboxFilter | undefined): SandboxRecord[] {
    let records = this.list();
    if (!filter) return records;
    if (filter.id) {
      // A filter is not a lookup: an unknown or ambiguous prefix just matches what it matches.
      const exact = records.filter((r) => r.id === filter.id);
      records = exact.length > 0 ? exact : records.filter((r) => r.id.startsWith(filter.id));
    }
    if (filter.state) {
      const wantReady = filter.state.state === 0;
      records = records.filter((r) => (r.phase === 'ready') === wantReady);
    }
    const selector = Object.entries(filter.labelSelector ?? {});
    if (selector.length > 0) records = records.filter((r) => selector.every(([k, v]) => r.labels[k] === v));
    return records;
  }

  // ---- start-up ------------------------------------------------------------

  /**
   * Half-made pods (a 'creating' record) are undone; ready pods whose infra
   * is gone become NOTREADY; running infras are watched again; pod dirs and
   * netns files no record names are removed. Nothing is re-created.
   */
  private async reconcile(): Promise<void> {
    const records = this.store.all();
    for (const record of records.filter((r) => r.phase === 'creating')) {
      this.log.warn({ id: record.id, name: record.name }, 'removing a pod sandbox left half-made by a crash');
      await this.undo(record).catch((err: unknown) =>
        this.log.error({ id: record.id, err: errorMessage(err) }, 'cleaning a half-made pod sandbox failed'),
      );
    }
    const kept = records.filter((r) => r.phase !== 'creating');
    for (const record of kept) {
      try {
        this.names.reserve(record.name, record.id, 'pod sandbox name');
      } catch (err) {
        // Two records cannot share a name; if they do, keep serving and say so.
        this.log.error({ id: record.id, err: errorMessage(err) }, 'pod sandbox record with a duplicate name');
      }
    }
    // A runtime `state` per pod: a few at a time so a restart with many pods stays quick.
    const ready = kept.filter((r) => r.phase === 'ready');
    const workers = Array.from({ length: Math.min(8, ready.length) }, async () => {
      for (let record = ready.shift(); record; record = ready.shift()) await this.recheck(record);
    });
    await Promise.all(workers);
    await this.removeOrphans();
  }

  /** A pod READY at the last run: still READY (and watched) if its infra runs, else NOTREADY. */
  private async recheck(record: SandboxRecord): Promise<void> {
    if (record.pinned) return this.recheckPinned(record);
    const { engine } = this.options;
    const exit = await engine.exitInfo(record.id).catch(() => undefined);
    const state = exit ? undefined : await engine.state(record.id, record.handler).catch(() => undefined);
    if (state && state.status === 'running') {
      if (await engine.conmonAlive(record.id)) {
        this.watch(record);
      } else {
        this.infraMonitorLost(record.id);
      }
      return;
    }
    this.log.warn(
      { id: record.id, exitCode: exit?.exitCode, runtimeState: state?.status ?? 'unknown' },
      'pod sandbox infra is gone since the last run: NOTREADY',
    );
    await this.store.put({ ...record, phase: 'notready' });
  }

  /**
   * A pod without an infra: READY while its namespaces are still pinned in
   * this boot (the netns and pinned files outlive berth, not a reboot; with
   * the host's namespaces only the boot ID tells).
   */
  private async recheckPinned(record: SandboxRecord): Promise<void> {
    const sameBoot = !record.bootId || !this.bootId || record.bootId === this.bootId;
    const alive =
      sameBoot &&
      (await pinnedAlive(record.pinned!)) &&
      (record.namespaces.network !== 'pod' || (!!record.netnsPath && (await isNetns(record.netnsPath))));
    if (alive) return;
    this.log.warn(
      { id: record.id, sameBoot },
      'pod sandbox namespaces are gone since the last run: NOTREADY',
    );
    await this.store.put({ ...record, phase: 'notready' });
  }

  private async removeOrphans(): Promise<void> {
    // IPs and port rules of pods that never got (or lost) a record.
    await this.options.network
      .sweepAttachments(new Set(this.store.ids()))
      .catch((err: unknown) => this.log.error({ err: errorMessage(err) }, 'sweeping CNI attachments failed'));
    let entries: string[] = [];
    try {
      entries = await readdir(this.sandboxesDir());
    } catch (err) {
      if (errnoCode(err) !== 'ENOENT') throw err;
    }
    for (const entry of entries) {
      if (this.store.has(entry)) continue;
      const dir = join(this.sandboxesDir(), entry);
      this.log.warn({ dir }, 'removing a pod directory no record names');
      await unmountAll(dir).catch(() => undefined);
      await rm(dir, { recursive: true, force: true }).catch(() => undefined);
    }
    // A netns made just before a crash, before its record named it.
    const owned = new Set(this.store.all().map((r) => r.netnsPath));
    for (const path of await listNetns(this.config.run_root)) {
      if (owned.has(path)) continue;
      this.log.warn({ path }, 'removing a network namespace no pod record names');
      await this.options.network
        .removeNetns(path)
        .catch((err: unknown) =>
          this.log.error({ path, err: errorMessage(err) }, 'removing an orphaned network namespace failed'),
        );
    }
  }

  /**
   * UpdatePodSandboxResources: records the pod's new overhead and resources
   * in its config. kubelet resizes the pod-level cgroup itself; berth keeps
   * what it was told so status, restarts and later containers agree with it.
   */
  async updateResources(
    idOrPrefix: string,
    overhead: LinuxContainerResources | undefined,
    resources: LinuxContainerResources | undefined,
  ): Promise<void> {
    const id = this.get(idOrPrefix).id;
    await this.withLock(id, async () => {
      const current = this.get(id);
      const config = PodSandboxConfig.fromJSON(current.config);
      config.linux = LinuxPodSandboxConfig.fromPartial({
        ...config.linux,
        overhead: overhead ?? config.linux?.overhead,
        resources: resources ?? config.linux?.resources,
      });
      await this.store.put({ ...current, config: PodSandboxConfig.toJSON(config) });
    });
  }

  /** Told of every durable change to a sandbox record (GetContainerEvents). */
  onRecordChange(listener: RecordListener<SandboxRecord>): void {
    this.store.onChange(listener);
  }

  /** Stops exit watches (daemon shutdown); pods keep running. */
  close(): void {
    this.closed = true;
    for (const controller of this.watches.values()) controller.abort();
    this.watches.clear();
    if (this.pollTimer) clearInterval(this.pollTimer);
    this.unmonitored.clear();
  }
}
