import { Counter, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { status as GrpcStatus } from '@grpc/grpc-js';

/** Prometheus metrics of the CRI server: one registry per daemon. */
export class RpcMetrics {
  readonly registry = new Registry();
  private readonly duration: Histogram<'rpc' | 'code'>;
  private readonly total: Counter<'rpc' | 'code'>;

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: 'berth_' });
    this.duration = new Histogram({
      name: 'berth_rpc_duration_seconds',
      help: 'Duration of CRI RPCs by method and status code.',
      labelNames: ['rpc', 'code'],
      buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
      registers: [this.registry],
    });
    this.total = new Counter({
      name: 'berth_rpc_total',
      help: 'CRI RPCs served by method and status code.',
      labelNames: ['rpc', 'code'],
      registers: [this.registry],
    });
  }

  observe(rpc: string, code: GrpcStatus, durationMs: number): void {
    const labels = { rpc, code: GrpcStatus[code] ?? String(code) };
    this.duration.observe(labels, durationMs / 1000);
    this.total.inc(labels);
  }
}
