import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { status as GrpcStatus } from '@grpc/grpc-js';
import type { RuntimeCounters } from '../util/runtime-counters.js';

/** What the gauges read at each scrape. */
export interface MetricsSources {
  /** Containers by state: created, running, exited. */
  containers(): Iterable<string>;
  /** Pod sandboxes by state: ready, notready. */
  pods(): Iterable<string>;
}

/** Counts `states` into `gauge` by its `state` label, the known states at 0 when absent. */
function setByState(gauge: Gauge<'state'>, known: readonly string[], states: Iterable<string>): void {
  const counts = new Map(known.map((s) => [s, 0]));
  for (const s of states) counts.set(s, (counts.get(s) ?? 0) + 1);
  gauge.reset();
  for (const [state, n] of counts) gauge.set({ state }, n);
}

/**
 * Prometheus metrics of the daemon, one registry per daemon: CRI calls by
 * method and code, what pulls fetched, container exits by reason, and
 * containers and pods by state.
 */
export class DaemonMetrics {
  readonly registry = new Registry();
  readonly counters: RuntimeCounters;
  private readonly duration: Histogram<'rpc' | 'code'>;
  private readonly total: Counter<'rpc' | 'code'>;
  private sources?: MetricsSources;

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: 'berth_' });
    const registers = [this.registry];
    this.duration = new Histogram({
      name: 'berth_rpc_duration_seconds',
      help: 'Duration of CRI RPCs by method and status code.',
      labelNames: ['rpc', 'code'],
      buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
      registers,
    });
    this.total = new Counter({
      name: 'berth_rpc_total',
      help: 'CRI RPCs served by method and status code.',
      labelNames: ['rpc', 'code'],
      registers,
    });
    const pulledBytes = new Counter({
      name: 'berth_image_pull_bytes_total',
      help: 'Bytes of blobs (layers, configs) that pulls received from registries.',
      registers,
    });
    const pulledLayers = new Counter({
      name: 'berth_image_pull_layers_total',
      help: 'Layers pulls needed, by where they came from: registry, shared (another pull fetching it at the same time) or local (already here).',
      labelNames: ['source'],
      registers,
    });
    const exits = new Counter({
      name: 'berth_container_exits_total',
      help: 'Container exits by reason: Completed, Error or OOMKilled.',
      labelNames: ['reason'],
      registers,
    });
    // Every label value from the start: a rate() over a series that appears late misses its first count.
    for (const source of ['registry', 'shared', 'local']) pulledLayers.inc({ source }, 0);
    for (const reason of ['Completed', 'Error', 'OOMKilled']) exits.inc({ reason }, 0);
    this.counters = {
      pulledBytes: (bytes) => pulledBytes.inc(bytes),
      pulledLayer: (source) => pulledLayers.inc({ source }),
      containerExited: (reason) => exits.inc({ reason }),
    };
    const sources = () => this.sources;
    new Gauge({
      name: 'berth_containers',
      help: 'Containers by state: created, running or exited.',
      labelNames: ['state'],
      registers,
      collect() {
        const from = sources();
        if (from) setByState(this, ['created', 'running', 'exited'], from.containers());
      },
    });
    new Gauge({
      name: 'berth_pod_sandboxes',
      help: 'Pod sandboxes by state: ready or notready.',
      labelNames: ['state'],
      registers,
      collect() {
        const from = sources();
        if (from) setByState(this, ['ready', 'notready'], from.pods());
      },
    });
  }

  /** Where the state gauges read from, once the daemon has its containers and pods. */
  watch(sources: MetricsSources): void {
    this.sources = sources;
  }

  observe(rpc: string, code: GrpcStatus, durationMs: number): void {
    const labels = { rpc, code: GrpcStatus[code] ?? String(code) };
    this.duration.observe(labels, durationMs / 1000);
    this.total.inc(labels);
  }
}
