import {
  Server,
  ServerCredentials,
  status as GrpcStatus,
  type ServiceDefinition,
  type ServerUnaryCall,
  type ServerWritableStream,
  type sendUnaryData,
  type UntypedServiceImplementation,
} from '@grpc/grpc-js';
import { RuntimeServiceService, ImageServiceService } from '../generated/api.js';
import { BerthError, errnoCode } from '../errors.js';
import type { Logger } from '../log.js';
import type { CallInfo, ImageImpl, RuntimeImpl, StreamImpl, UnaryImpl } from './rpc.js';
import type { DaemonMetrics } from './metrics.js';
import { serializeListContainers } from './list-encoding.js';

export interface ServiceImpls {
  runtime: RuntimeImpl;
  image: ImageImpl;
}

/**
 * Handlers still running. A client that gives up (cancel, deadline) closes
 * its stream, so grpc-js's tryShutdown can finish while the handler behind it
 * is half-way through a RunPodSandbox; shutdown drains these too, so every
 * multi-step operation ends committed or undone rather than cut off.
 */
export class InFlight {
  private readonly running = new Set<Promise<unknown>>();

  track<T>(work: Promise<T>): Promise<T> {
    const settled = work.then(
      () => undefined,
      () => undefined,
    );
    this.running.add(settled);
    void settled.then(() => this.running.delete(settled));
    return work;
  }

  get size(): number {
    return this.running.size;
  }

  /** Resolves when every tracked handler has settled, or after timeoutMs (returns how many were left). */
  async drain(timeoutMs: number): Promise<number> {
    const deadline = Date.now() + timeoutMs;
    while (this.running.size > 0 && Date.now() < deadline) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        Promise.all(this.running),
        new Promise((r) => (timer = setTimeout(r, Math.max(0, deadline - Date.now())))),
      ]);
      clearTimeout(timer);
    }
    return this.running.size;
  }
}

interface MethodDef {
  path: string;
  responseStream: boolean;
}

/** Errno codes of a node out of room: RESOURCE_EXHAUSTED, which gRPC names for a full file system. */
const OUT_OF_SPACE = new Set(['ENOSPC', 'EDQUOT']);

/** True when the error, or one it was made from, is a full disk or quota. */
function outOfSpace(err: unknown): boolean {
  for (let e = err, depth = 0; e instanceof Error && depth < 10; e = e.cause, depth++) {
    if (OUT_OF_SPACE.has(errnoCode(e) ?? '')) return true;
  }
  return false;
}

/** Maps any thrown value to a gRPC status; unknown errors become INTERNAL. */
export function toGrpcError(err: unknown): { code: GrpcStatus; details: string } {
  const code = err instanceof BerthError ? err.code : GrpcStatus.INTERNAL;
  const details = err instanceof Error ? err.message : String(err);
  // Wrapped as INTERNAL or as a failed step (FAILED_PRECONDITION), a full disk is still a full disk.
  const generic = code === GrpcStatus.INTERNAL || code === GrpcStatus.FAILED_PRECONDITION;
  if (generic && outOfSpace(err)) return { code: GrpcStatus.RESOURCE_EXHAUSTED, details };
  return { code, details };
}

function rpcName(path: string): string {
  // "/runtime.v1.RuntimeService/Version" -> "RuntimeService/Version"
  return path.split('.').pop() ?? path;
}

function callInfo(
  log: Logger,
  name: string,
  cancelled: () => boolean,
  onCancel: (f: () => void) => void,
): CallInfo {
  const controller = new AbortController();
  onCancel(() => controller.abort(new Error(`${name} cancelled by the client`)));
  if (cancelled()) controller.abort(new Error(`${name} cancelled by the client`));
  return { signal: controller.signal, log: log.child({ rpc: name }) };
}

/**
 * Wraps berth's async handlers as grpc-js handlers: logs one debug line per
 * RPC with duration and status, maps errors, and answers UNIMPLEMENTED for
 * methods berth has no handler for.
 */
function wrapService(
  definition: ServiceDefinition,
  impls: Record<string, UnaryImpl<unknown, unknown> | StreamImpl<unknown, unknown> | undefined>,
  log: Logger,
  metrics: DaemonMetrics | undefined,
  inFlight: InFlight | undefined,
): UntypedServiceImplementation {
  const wrapped: UntypedServiceImplementation = {};
  for (const [method, def] of Object.entries(definition) as [string, MethodDef][]) {
    const name = rpcName(def.path);
    const impl = impls[method];
    const finish = (started: bigint, code: GrpcStatus, err?: unknown) => {
      const durationMs = Number(process.hrtime.bigint() - started) / 1e6;
      metrics?.observe(name, code, durationMs);
      if (code === GrpcStatus.OK) {
        log.debug({ rpc: name, durationMs, code: GrpcStatus[code] }, 'rpc');
      } else if (code === GrpcStatus.INTERNAL || code === GrpcStatus.UNKNOWN) {
        log.error({ rpc: name, durationMs, code: GrpcStatus[code], err }, 'rpc failed');
      } else {
        log.debug({ rpc: name, durationMs, code: GrpcStatus[code], error: (err as Error)?.message }, 'rpc');
      }
    };
    if (def.responseStream) {
      wrapped[method] = (call: ServerWritableStream<unknown, unknown>) => {
        const started = process.hrtime.bigint();
        if (!impl) {
          const details = `berth does not implement ${name}`;
          finish(started, GrpcStatus.UNIMPLEMENTED);
          call.emit('error', { code: GrpcStatus.UNIMPLEMENTED, details });
          return;
        }
        const info = callInfo(
          log,
          name,
          () => call.cancelled,
          (f) => call.on('cancelled', f),
        );
        const work = (impl as StreamImpl<unknown, unknown>)(
          call.request,
          (response) => call.write(response),
          info,
        );
        (inFlight ? inFlight.track(work) : work).then(
          () => {
            finish(started, GrpcStatus.OK);
            call.end();
          },
          (err: unknown) => {
            const { code, details } = toGrpcError(err);
            finish(started, code, err);
            call.emit('error', { code, details });
          },
        );
      };
    } else {
      wrapped[method] = (call: ServerUnaryCall<unknown, unknown>, callback: sendUnaryData<unknown>) => {
        const started = process.hrtime.bigint();
        if (!impl) {
          finish(started, GrpcStatus.UNIMPLEMENTED);
          callback({ code: GrpcStatus.UNIMPLEMENTED, details: `berth does not implement ${name}` });
          return;
        }
        const info = callInfo(
          log,
          name,
          () => call.cancelled,
          (f) => call.on('cancelled', f),
        );
        let result: Promise<unknown>;
        try {
          result = (impl as UnaryImpl<unknown, unknown>)(call.request, info);
        } catch (err) {
          result = Promise.reject(err);
        }
        (inFlight ? inFlight.track(result) : result).then(
          (response) => {
            finish(started, GrpcStatus.OK);
            callback(null, response);
          },
          (err: unknown) => {
            const { code, details } = toGrpcError(err);
            finish(started, code, err);
            callback({ code, details });
          },
        );
      };
    }
  }
  return wrapped;
}

export function createGrpcServer(
  impls: ServiceImpls,
  options: { log: Logger; maxMessageBytes: number; metrics?: DaemonMetrics; inFlight?: InFlight },
): Server {
  const server = new Server({
    'grpc.max_receive_message_length': options.maxMessageBytes,
    'grpc.max_send_message_length': options.maxMessageBytes,
  });
  server.addService(
    {
      ...RuntimeServiceService,
      listContainers: { ...RuntimeServiceService.listContainers, responseSerialize: serializeListContainers },
    },
    wrapService(
      RuntimeServiceService,
      impls.runtime as Record<string, never>,
      options.log,
      options.metrics,
      options.inFlight,
    ),
  );
  server.addService(
    ImageServiceService,
    wrapService(
      ImageServiceService,
      impls.image as Record<string, never>,
      options.log,
      options.metrics,
      options.inFlight,
    ),
  );
  return server;
}

/** Binds a grpc-js server to a unix socket path. */
export function bindUnix(server: Server, socketPath: string): Promise<void> {
  return new Promise((resolve, reject) => {
    server.bindAsync(`unix://${socketPath}`, ServerCredentials.createInsecure(), (err) => {
      if (err) reject(err);
      else resolve();
    });
  });
}
