/**
 * GetContainerEvents: the stream kubelet's evented PLEG listens to instead of
 * relisting every second. Events come from durable record changes (so a
 * container that exits on its own, noticed through conmon's exit file, is
 * reported like one stopped by an RPC); sandboxes count as containers, as
 * kubelet expects: their own ID with CREATED, STARTED, STOPPED, DELETED.
 */
import {
  ContainerEventResponse,
  ContainerEventType,
  type ContainerStatus,
  type PodSandboxStatus,
} from '../generated/api.js';
import { BerthError, ResourceExhaustedError } from '../errors.js';
import type { Logger } from '../log.js';
import type { ContainerRecord } from '../container/record.js';
import type { SandboxRecord } from '../sandbox/types.js';
import type { CallInfo, RuntimeImpl } from './rpc.js';

/** A subscriber that falls this far behind is dropped rather than buffering without bound. */
const MAX_PENDING_EVENTS = 10_000;

export interface EventSource {
  /** PodSandboxStatus of a pod; undefined once it is gone. */
  podStatus(podSandboxId: string): Promise<PodSandboxStatus | undefined>;
  /** Statuses of the containers that exist in a pod. */
  containerStatuses(podSandboxId: string): Promise<ContainerStatus[]>;
}

interface Subscriber {
  send(event: ContainerEventResponse): void;
  fail(err: Error): void;
  pending: number;
}

interface Change {
  containerId: string;
  podSandboxId: string;
  type: ContainerEventType;
}

export function containerTransitions(
  before: ContainerRecord | undefined,
  after: ContainerRecord | undefined,
): ContainerEventType[] {
  const wasVisible = before !== undefined && before.phase === 'created';
  if (!after) return wasVisible ? [ContainerEventType.CONTAINER_DELETED_EVENT] : [];
  if (after.phase !== 'created') return [];
  const out: ContainerEventType[] = [];
  if (!wasVisible) out.push(ContainerEventType.CONTAINER_CREATED_EVENT);
  if (after.startedAtNs !== undefined && (!wasVisible || before.startedAtNs === undefined))
    out.push(ContainerEventType.CONTAINER_STARTED_EVENT);
  if (after.finishedAtNs !== undefined && (!wasVisible || before.finishedAtNs === undefined))
    out.push(ContainerEventType.CONTAINER_STOPPED_EVENT);
  return out;
}

export function sandboxTransitions(
  before: SandboxRecord | undefined,
  after: SandboxRecord | undefined,
): ContainerEventType[] {
  const wasVisible = before !== undefined && before.phase !== 'creating';
  if (!after) return wasVisible ? [ContainerEventType.CONTAINER_DELETED_EVENT] : [];
  if (after.phase === 'creating') return [];
  const out: ContainerEventType[] = [];
  if (!wasVisible) {
    out.push(ContainerEventType.CONTAINER_CREATED_EVENT);
    if (after.phase === 'ready') out.push(ContainerEventType.CONTAINER_STARTED_EVENT);
  }
  if (after.phase === 'notready' && (!wasVisible || before.phase === 'ready'))
    out.push(ContainerEventType.CONTAINER_STOPPED_EVENT);
  return out;
}

export class ContainerEventHub {
  private readonly subscribers = new Set<Subscriber>();
  /** Events are built one after another so subscribers see them in the order they happened. */
  private queue: Promise<void> = Promise.resolve();
  private closed = false;
  private readonly closers = new Set<() => void>();

  constructor(
    private readonly source: EventSource,
    private readonly log: Logger,
  ) {}

  containerChanged(before: ContainerRecord | undefined, after: ContainerRecord | undefined): void {
    const record = after ?? before;
    if (!record) return;
    for (const type of containerTransitions(before, after))
      this.enqueue({ containerId: record.id, podSandboxId: record.podSandboxId, type });
  }

  sandboxChanged(before: SandboxRecord | undefined, after: SandboxRecord | undefined): void {
    const record = after ?? before;
    if (!record) return;
    for (const type of sandboxTransitions(before, after))
      this.enqueue({ containerId: record.id, podSandboxId: record.id, type });
  }

  private enqueue(change: Change): void {
    if (this.subscribers.size === 0 || this.closed) return;
    const createdAt = BigInt(Date.now()) * 1_000_000n;
    this.queue = this.queue.then(async () => {
      try {
        const [podSandboxStatus, containersStatuses] = await Promise.all([
          this.source.podStatus(change.podSandboxId),
          this.source.containerStatuses(change.podSandboxId),
        ]);
        this.publish(
          ContainerEventResponse.fromPartial({
            containerId: change.containerId,
            containerEventType: change.type,
            createdAt,
            podSandboxStatus,
            containersStatuses,
          }),
        );
      } catch (err) {
        this.log.warn({ err, containerId: change.containerId }, 'container event not delivered');
      }
    });
  }

  private publish(event: ContainerEventResponse): void {
    for (const subscriber of this.subscribers) {
      if (subscriber.pending >= MAX_PENDING_EVENTS) {
        subscriber.fail(
          new ResourceExhaustedError(
            `GetContainerEvents subscriber fell ${MAX_PENDING_EVENTS} events behind; reconnect and relist`,
          ),
        );
        continue;
      }
      subscriber.send(event);
    }
  }

  /** Streams events to one client until it cancels or the hub closes. */
  subscribe(send: (event: ContainerEventResponse) => boolean | void, call: CallInfo): Promise<void> {
    if (this.closed) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      const subscriber: Subscriber = {
        pending: 0,
        send: (event) => {
          // grpc-js returns false once its buffer is full; count until it drains.
          if (send(event) === false) subscriber.pending++;
          else subscriber.pending = 0;
        },
        fail: (err) => {
          done();
          reject(err);
        },
      };
      const done = () => {
        this.subscribers.delete(subscriber);
        this.closers.delete(finish);
        call.signal.removeEventListener('abort', finish);
      };
      const finish = () => {
        done();
        resolve();
      };
      this.subscribers.add(subscriber);
      this.closers.add(finish);
      call.signal.addEventListener('abort', finish, { once: true });
    });
  }

  /** Ends every stream (daemon shutdown waits for in-flight calls). */
  close(): void {
    this.closed = true;
    for (const finish of [...this.closers]) finish();
  }
}

export function containerEventRpcs(hub: () => ContainerEventHub): RuntimeImpl {
  return {
    getContainerEvents: (_request, send, call) => hub().subscribe(send, call),
  };
}

/** Builds event payloads from the status RPCs themselves, so events and statuses never disagree. */
export function eventSourceFrom(
  runtime: RuntimeImpl,
  call: CallInfo,
  podContainers: (podId: string) => string[],
) {
  return {
    async podStatus(podSandboxId: string): Promise<PodSandboxStatus | undefined> {
      try {
        return (await runtime.podSandboxStatus!({ podSandboxId, verbose: false }, call)).status;
      } catch (err) {
        if (err instanceof BerthError) return undefined;
        throw err;
      }
    },
    async containerStatuses(podSandboxId: string): Promise<ContainerStatus[]> {
      const statuses: ContainerStatus[] = [];
      for (const containerId of podContainers(podSandboxId)) {
        try {
          const { status } = await runtime.containerStatus!({ containerId, verbose: false }, call);
          if (status) statuses.push(status);
        } catch (err) {
          // Removed meanwhile.
          if (!(err instanceof BerthError)) throw err;
        }
      }
      return statuses;
    },
  } satisfies EventSource;
}
