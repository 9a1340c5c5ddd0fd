import type { Server as HttpServer } from 'node:http';
import { mkdir } from 'node:fs/promises';
import type { Server as GrpcServer } from '@grpc/grpc-js';
import { loadConfig, reloadableChanges, type LoadOptions } from './config/load.js';
import type { BerthConfig } from './config/schema.js';
import { createLogger, flushLog, type Logger } from './log.js';
import { bindUnix, createGrpcServer, InFlight } from './server/grpc-server.js';
import type { DaemonMetrics } from './server/metrics.js';
import { prepareSocketPath, restrictSocket } from './server/socket.js';
import type { ServerContext } from './server/context.js';
import type { ImageImpl, RuntimeImpl } from './server/rpc.js';
import { versionRpcs } from './server/version.js';
import { statusRpcs } from './server/status.js';
import { runtimeConfigRpcs } from './server/runtime-config.js';
import { deriveListStreams } from './server/list-streams.js';
import { detectCgroupDriver } from './oci/cgroup-driver.js';
import { ImageManager } from './image/manager.js';
import { setLayerWorkerCount, stopLayerWorkers } from './image/layer/ingest.js';
import { Puller } from './image/pull/puller.js';
import { UnavailableError } from './errors.js';
import { errorMessage } from './util/thrown.js';
import { prestartSpawnHelper } from './util/run.js';
import { imageListRpcs } from './server/image-list.js';
import { imageStatusRpcs } from './server/image-status.js';
import { imageRemoveRpcs } from './server/image-remove.js';
import { imageFsInfoRpcs } from './server/image-fs-info.js';
import { configuredHandlers, createOciEngine } from './oci/handlers.js';
import { isRunsc, sweepStaleRunscLocks } from './oci/runsc-shim.js';
import type { ConmonEngine } from './oci/engine.js';
import { detectSpecHost, type SpecHost } from './oci/spec/index.js';
import { createPodNetwork } from './sandbox/network/index.js';
import type { PodNetwork } from './sandbox/network-types.js';
import { SandboxManager } from './sandbox/manager.js';
import { podLifecycleRpcs } from './server/pod-lifecycle.js';
import { podStatusRpcs } from './server/pod-status.js';
import { ContainerManager } from './container/manager.js';
import { stateOf } from './container/record.js';
import { buildContainerSpec, linuxResources } from './oci/spec/index.js';
import { containerLifecycleRpcs } from './server/container-lifecycle.js';
import { containerStatusRpcs } from './server/container-status.js';
import { containerExecRpcs } from './server/container-exec.js';
import { containerStatsRpcs } from './server/container-stats.js';
import { podMetricsRpcs } from './server/pod-metrics.js';
import { podResourcesRpcs } from './server/pod-resources.js';
import { containerCheckpointRpcs } from './server/container-checkpoint.js';
import { ContainerEventHub, containerEventRpcs, eventSourceFrom } from './server/container-events.js';
import { imagePullRpcs } from './server/image-pull.js';
import { StreamServer } from './stream/server.js';
import { criStreamBackend } from './stream/cri-backend.js';
import { streamRpcs } from './server/stream-rpcs.js';
import { http } from './util/node-http.js';
import { settleUsernsChecks } from './oci/userns/support.js';

/** How long shutdown waits for handlers whose clients already left (a pod start or a pull). */
const SHUTDOWN_DRAIN_MS = 60_000;
/** How long shutdown waits for the last log lines to be written. */
const LOG_FLUSH_MS = 2_000;

/** The running daemon: configuration, subsystems and servers. */
export class Daemon {
  private grpc?: GrpcServer;
  private metricsServer?: HttpServer;
  private streamServer?: StreamServer;
  private current: BerthConfig;
  private stopping?: Promise<void>;
  /** Opened by start(), after the socket is known to be free. */
  imageManager?: ImageManager;
  /** Pod subsystem, set up by start() after the image store. */
  pods?: { engine: ConmonEngine; specHost: SpecHost; network: PodNetwork; sandboxes: SandboxManager };
  /** Containers, opened by start() after the sandboxes (names share their registry). */
  containers?: ContainerManager;
  /** GetContainerEvents subscribers; built with the handlers. */
  private events?: ContainerEventHub;
  /** Only with server.metrics_address: prom-client and its collectors cost memory and CPU. */
  private metrics?: DaemonMetrics;
  private readonly inFlight = new InFlight();

  private constructor(
    private readonly loadOptions: LoadOptions,
    config: BerthConfig,
    readonly ctx: ServerContext,
    readonly log: Logger,
  ) {
    this.current = config;
  }

  static async create(loadOptions: LoadOptions, logDestination?: NodeJS.WritableStream): Promise<Daemon> {
    const { config, files } = await loadConfig(loadOptions);
    const log = createLogger(config.log_level, logDestination);
    const cgroupDriver =
      config.runtime.cgroup_driver === 'auto' ? await detectCgroupDriver() : config.runtime.cgroup_driver;
    const holder: { daemon?: Daemon } = {};
    const pods = (): NonNullable<Daemon['pods']> => {
      const value = holder.daemon?.pods;
      if (!value) throw new UnavailableError('pod sandboxes are not set up yet');
      return value;
    };
    const ctx: ServerContext = {
      config: () => holder.daemon!.current,
      log,
      cgroupDriver,
      configFiles: files,
      podCidrs: [],
      get images(): ImageManager {
        const images = holder.daemon?.imageManager;
        if (!images) throw new UnavailableError('the image store is not open yet');
        return images;
      },
      get engine(): ConmonEngine {
        return pods().engine;
      },
      get specHost(): SpecHost {
        return pods().specHost;
      },
      get network(): PodNetwork {
        return pods().network;
      },
      get sandboxes(): SandboxManager {
        return pods().sandboxes;
      },
      get containers(): ContainerManager {
        const containers = holder.daemon?.containers;
        if (!containers) throw new UnavailableError('containers are not set up yet');
        return containers;
      },
    };
    holder.daemon = new Daemon(loadOptions, config, ctx, log);
    return holder.daemon;
  }

  get config(): BerthConfig {
    return this.current;
  }

  private handlers(): { runtime: RuntimeImpl; image: ImageImpl } {
    const runtime: RuntimeImpl = {
      ...versionRpcs(),
      ...statusRpcs(this.ctx),
      ...runtimeConfigRpcs(this.ctx),
      ...podLifecycleRpcs(this.ctx),
      ...podStatusRpcs(this.ctx),
      ...containerLifecycleRpcs(this.ctx),
      ...containerStatusRpcs(this.ctx),
      ...containerExecRpcs(this.ctx),
      ...streamRpcs(() => this.streamServer),
      ...containerStatsRpcs(this.ctx),
      ...podMetricsRpcs(this.ctx),
      ...podResourcesRpcs(this.ctx),
      ...containerCheckpointRpcs(this.ctx),
      ...containerEventRpcs(() => this.events!),
    };
    const image: ImageImpl = {
      ...imageListRpcs(this.ctx),
      ...imageStatusRpcs(this.ctx),
      ...imageRemoveRpcs(this.ctx),
      ...imageFsInfoRpcs(this.ctx),
      ...imagePullRpcs(this.ctx),
    };
    deriveListStreams(runtime, image, this.current.server.max_message_bytes);
    this.watchRecords(runtime);
    return { runtime, image };
  }

  /** Feeds GetContainerEvents from durable sandbox and container record changes. */
  private watchRecords(runtime: RuntimeImpl): void {
    const containers = this.containers;
    const sandboxes = this.pods?.sandboxes;
    if (!containers || !sandboxes) return;
    const log = this.log.child({ component: 'events' });
    const internalCall = { signal: new AbortController().signal, log };
    const podContainers = (podId: string) =>
      containers
        .list()
        .filter((c) => c.podSandboxId === podId)
        .map((c) => c.id);
    const hub = new ContainerEventHub(eventSourceFrom(runtime, internalCall, podContainers), log);
    containers.store.onChange((before, after) => hub.containerChanged(before, after));
    sandboxes.onRecordChange((before, after) => hub.sandboxChanged(before, after));
    this.events = hub;
  }

  /** Starts serving; resolves once the socket accepts connections. */
  async start(): Promise<void> {
    const config = this.current;
    prestartSpawnHelper();
    await mkdir(config.root, { recursive: true, mode: 0o711 });
    await mkdir(config.run_root, { recursive: true, mode: 0o711 });
    await prepareSocketPath(config.server.socket);
    setLayerWorkerCount(config.image.unpack_threads);
    if (config.server.metrics_address)
      this.metrics = new (await import('./server/metrics.js')).DaemonMetrics();
    // Reconciles the image store (temp files, half-made layers) before serving.
    this.imageManager = await ImageManager.open(() => this.current, this.log, this.metrics?.counters);
    await this.startPods();
    this.watchForMetrics();
    this.streamServer = new StreamServer({
      config: () => this.current.streaming,
      backend: criStreamBackend(this.ctx),
      log: this.log.child({ component: 'stream' }),
    });
    await this.streamServer.start();
    this.grpc = createGrpcServer(this.handlers(), {
      log: this.log,
      maxMessageBytes: config.server.max_message_bytes,
      metrics: this.metrics,
      inFlight: this.inFlight,
    });
    await bindUnix(this.grpc, config.server.socket);
    await restrictSocket(config.server.socket);
    if (config.server.metrics_address) await this.startMetrics(config.server.metrics_address);
    this.log.info(
      {
        socket: config.server.socket,
        cgroupDriver: this.ctx.cgroupDriver,
        configFiles: this.ctx.configFiles,
      },
      'berth is serving',
    );
  }

  /** Engine, host facts, networking, then the sandbox records (reconciled with reality). */
  private async startPods(): Promise<void> {
    const config = this.current;
    const specHost = await detectSpecHost({
      restrictOomScoreAdj: config.runtime.restrict_oom_score_adj,
      cgroupDriver: this.ctx.cgroupDriver,
      log: this.log,
    });
    const engine = createOciEngine(config, this.log, this.ctx.cgroupDriver);
    const network = createPodNetwork(() => this.current, this.log.child({ component: 'network' }));
    const sandboxes = await SandboxManager.open({
      config: () => this.current,
      log: this.log,
      engine,
      network,
      images: () => this.ctx.images,
      specHost,
    });
    this.pods = { engine, specHost, network, sandboxes };
    this.containers = await ContainerManager.open({
      config: () => this.current,
      log: this.log.child({ component: 'container' }),
      engine,
      images: this.ctx.images,
      sandboxes,
      specHost,
      buildSpec: buildContainerSpec,
      resources: linuxResources,
      counters: this.metrics?.counters,
    });
    await this.sweepRunscRoots(config, sandboxes, this.containers);
  }

  /** The state gauges read the container and pod records at each scrape. */
  private watchForMetrics(): void {
    const { containers, pods } = this;
    if (!this.metrics || !containers || !pods) return;
    this.metrics.watch({
      containers: () => containers.list().map(stateOf),
      pods: () => pods.sandboxes.list().map((r) => (r.phase === 'ready' ? 'ready' : 'notready')),
    });
  }

  /** Lock files runsc left behind for containers no record names any more (see sweepStaleRunscLocks). */
  private async sweepRunscRoots(
    config: BerthConfig,
    sandboxes: SandboxManager,
    containers: ContainerManager,
  ): Promise<void> {
    const known = new Set([...sandboxes.list().map((r) => r.id), ...containers.store.ids()]);
    for (const handler of configuredHandlers(config).values()) {
      if (!isRunsc(handler)) continue;
      try {
        const removed = await sweepStaleRunscLocks(handler.root, known);
        if (removed.length > 0)
          this.log.info(
            { handler: handler.name, root: handler.root, removed: removed.length },
            'removed stale runsc lock files',
          );
      } catch (err) {
        this.log.warn(
          { handler: handler.name, root: handler.root, err: errorMessage(err) },
          'sweeping runsc lock files failed',
        );
      }
    }
  }

  private async startMetrics(address: string): Promise<void> {
    const colon = address.lastIndexOf(':');
    const host = address.slice(0, colon) || '127.0.0.1';
    const port = Number(address.slice(colon + 1));
    const server = http.createServer((req, res) => {
      if (req.url !== '/metrics') {
        res.writeHead(404).end();
        return;
      }
      const registry = this.metrics!.registry;
      registry.metrics().then(
        (body) => res.writeHead(200, { 'content-type': registry.contentType }).end(body),
        (err: unknown) => res.writeHead(500).end(String(err)),
      );
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host.replace(/^\[|\]$/g, ''), () => resolve());
    });
    this.metricsServer = server;
  }

  /** SIGHUP: re-reads the config and applies what can change without a restart. */
  async reload(): Promise<string[]> {
    const { config } = await loadConfig(this.loadOptions);
    const changed = reloadableChanges(this.current, config);
    // Only reloadable keys take effect; everything else keeps its start-up value.
    const next: BerthConfig = structuredClone(this.current);
    next.log_level = config.log_level;
    next.image.unqualified_search_registries = config.image.unqualified_search_registries;
    next.image.pull_progress_timeout_seconds = config.image.pull_progress_timeout_seconds;
    next.image.pinned_images = config.image.pinned_images;
    next.image.registries = config.image.registries;
    this.current = next;
    this.log.level = next.log_level;
    // CA files and the system store may have changed even where the config has not.
    if (this.imageManager) {
      Puller.for(
        this.imageManager,
        () => this.current,
        this.log.child({ component: 'pull' }),
      ).renewConnections();
    }
    this.log.info(
      { changed },
      changed.length ? 'configuration reloaded' : 'configuration reloaded; nothing changed',
    );
    return changed;
  }

  /** Stops accepting calls, lets in-flight calls finish, then closes. */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      // Event streams never end on their own; tryShutdown would wait for them forever.
      this.events?.close();
      const grpc = this.grpc;
      if (grpc) {
        await new Promise<void>((resolve) => grpc.tryShutdown(() => resolve()));
      }
      // Handlers whose clients went away are still running: let them commit or undo.
      const left = await this.inFlight.drain(SHUTDOWN_DRAIN_MS);
      if (left > 0) this.log.warn({ left }, 'shutting down with RPC handlers still running');
      await this.streamServer?.close();
      // Pulls have ended by now: their layer worker threads go too.
      await stopLayerWorkers();
      // A user-namespace self-test still running holds mounts in its scratch dir.
      await settleUsernsChecks();
      // Pods and their conmons keep running; only berth's watches end.
      this.containers?.close();
      this.pods?.sandboxes.close();
      this.pods?.engine.close();
      if (this.metricsServer) {
        await new Promise<void>((resolve) => this.metricsServer!.close(() => resolve()));
      }
      this.log.info('berth stopped');
      await flushLog(this.log, LOG_FLUSH_MS);
    })();
    return this.stopping;
  }
}
