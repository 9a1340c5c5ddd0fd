/**
 * What berth's parts count for Prometheus (server/metrics.ts implements it
 * when server.metrics_address is set; otherwise nothing is counted and
 * prom-client is never loaded).
 */
export interface RuntimeCounters {
  /** Bytes of blobs a pull received from a registry. */
  pulledBytes(bytes: number): void;
  /** A layer a pull needed: fetched by it, taken from another pull's download, or already here. */
  pulledLayer(source: 'registry' | 'shared' | 'local'): void;
  /** A container's exit, counted once, by the reason ContainerStatus gives it. */
  containerExited(reason: 'Completed' | 'Error' | 'OOMKilled'): void;
}

export const NO_COUNTERS: RuntimeCounters = Object.freeze({
  pulledBytes: () => undefined,
  pulledLayer: () => undefined,
  containerExited: () => undefined,
});
