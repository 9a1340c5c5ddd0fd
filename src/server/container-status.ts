import {
  Container,
  ContainerStatusResponse,
  ImageSpec,
  LinuxContainerResources,
  Mount,
  Signal,
  signalFromJSON,
  type ContainerFilter,
} from '../generated/api.js';
import { criState, type ContainerRecord } from '../container/record.js';
import type { ServerContext } from './context.js';
import type { RuntimeImpl } from './rpc.js';

/** Every key=value of the selector is among the labels. */
export function matchesLabels(
  labels: Record<string, string>,
  selector: Record<string, string> | undefined,
): boolean {
  for (const [k, v] of Object.entries(selector ?? {})) if (labels[k] !== v) return false;
  return true;
}

function imageSpecOf(record: ContainerRecord): ImageSpec {
  const spec = ImageSpec.fromJSON(record.imageSpec);
  return { ...spec, image: record.imageName, userSpecifiedImage: spec.userSpecifiedImage || spec.image };
}

function stopSignal(name: string): Signal {
  const value = signalFromJSON(name);
  return value === Signal.UNRECOGNIZED ? Signal.RUNTIME_DEFAULT : value;
}

/**
 * The Container message ListContainers gives for a record, kept while the record object and
 * its state are the same, so serializeListContainers encodes it once. Everything else in it
 * is fixed when the container is created. Never mutated once made.
 */
const listedContainers = new WeakMap<ContainerRecord, Container>();

function listedContainer(record: ContainerRecord): Container {
  const state = criState(record);
  const cached = listedContainers.get(record);
  if (cached?.state === state) return cached;
  const message: Container = {
    id: record.id,
    podSandboxId: record.podSandboxId,
    metadata: record.metadata,
    image: imageSpecOf(record),
    imageRef: record.imageId,
    imageId: record.imageId,
    state,
    createdAt: BigInt(record.createdAtNs),
    labels: record.labels,
    annotations: record.annotations,
  };
  listedContainers.set(record, message);
  return message;
}

/** ContainerStatus and ListContainers, served from the in-memory records. */
export function containerStatusRpcs(ctx: ServerContext): RuntimeImpl {
  return {
    containerStatus: async (request) => {
      const record = await ctx.containers.refresh(request.containerId);
      const status = ContainerStatusResponse.fromPartial({
        status: {
          id: record.id,
          metadata: record.metadata,
          state: criState(record),
          createdAt: BigInt(record.createdAtNs),
          startedAt: BigInt(record.startedAtNs ?? '0'),
          finishedAt: BigInt(record.finishedAtNs ?? '0'),
          exitCode: record.exitCode ?? 0,
          image: imageSpecOf(record),
          imageRef: record.imageId,
          imageId: record.imageId,
          reason: record.reason ?? '',
          message: record.message ?? '',
          labels: record.labels,
          annotations: record.annotations,
          mounts: record.mounts.map((m) => Mount.fromJSON(m)),
          logPath: record.logPath,
          resources: record.resources
            ? { linux: LinuxContainerResources.fromJSON(record.resources) }
            : undefined,
          user: record.user
            ? {
                linux: {
                  uid: BigInt(record.user.uid),
                  gid: BigInt(record.user.gid),
                  supplementalGroups: record.user.additionalGids.map((g) => BigInt(g)),
                },
              }
            : undefined,
          stopSignal: stopSignal(record.stopSignal),
        },
      });
      if (request.verbose) status.info = await ctx.containers.verboseInfo(record);
      return status;
    },
    listContainers: async (request) => {
      const filter: ContainerFilter | undefined = request.filter;
      const containers: Container[] = [];
      for (const record of ctx.containers.list()) {
        if (filter?.id && !record.id.startsWith(filter.id)) continue;
        if (filter?.podSandboxId && !record.podSandboxId.startsWith(filter.podSandboxId)) continue;
        if (filter?.state && criState(record) !== filter.state.state) continue;
        if (!matchesLabels(record.labels, filter?.labelSelector)) continue;
        containers.push(listedContainer(record));
      }
      // Not copied through fromPartial: the same objects keep their encoded bytes (list-encoding.ts).
      return { containers };
    },
  };
}
