import {
  ContainerStatsResponse,
  ListContainerStatsResponse,
  ListPodSandboxStatsResponse,
  PodSandboxStatsResponse,
} from '../generated/api.js';
import type { ServerContext } from './context.js';
import type { RuntimeImpl } from './rpc.js';
import { matchesLabels } from './container-status.js';

/** ContainerStats, ListContainerStats, PodSandboxStats, ListPodSandboxStats. */
export function containerStatsRpcs(ctx: ServerContext): RuntimeImpl {
  const containersOf = (podId: string) => ctx.containers.list().filter((c) => c.podSandboxId === podId);
  return {
    containerStats: async (request) => {
      const record = ctx.containers.get(request.containerId);
      return ContainerStatsResponse.fromPartial({ stats: await ctx.containers.stats.container(record) });
    },
    listContainerStats: async (request) => {
      const f = request.filter;
      const records = ctx.containers
        .list()
        .filter(
          (r) =>
            (!f?.id || r.id.startsWith(f.id)) &&
            (!f?.podSandboxId || r.podSandboxId.startsWith(f.podSandboxId)) &&
            matchesLabels(r.labels, f?.labelSelector),
        );
      const stats = await Promise.all(records.map((r) => ctx.containers.stats.container(r)));
      return ListContainerStatsResponse.fromPartial({ stats });
    },
    podSandboxStats: async (request) => {
      const sandbox = ctx.containers.sandboxes.get(request.podSandboxId);
      return PodSandboxStatsResponse.fromPartial({
        stats: await ctx.containers.stats.pod(sandbox, containersOf(sandbox.id)),
      });
    },
    listPodSandboxStats: async (request) => {
      const f = request.filter;
      const pods = ctx.containers.sandboxes
        .list()
        .filter((s) => (!f?.id || s.id.startsWith(f.id)) && matchesLabels(s.labels, f?.labelSelector));
      const stats = await Promise.all(pods.map((s) => ctx.containers.stats.pod(s, containersOf(s.id))));
      return ListPodSandboxStatsResponse.fromPartial({ stats });
    },
  };
}
