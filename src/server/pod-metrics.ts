/**
 * ListMetricDescriptors and ListPodSandboxMetrics: cAdvisor-style series for
 * kubelet's /metrics/cadvisor when it takes stats from the CRI. Pods that are
 * not ready and containers without a live process contribute no series
 * rather than stale or zero ones.
 */
import {
  ListMetricDescriptorsResponse,
  ListPodSandboxMetricsResponse,
  PodSandboxMetrics,
} from '../generated/api.js';
import { stateOf, type ContainerRecord } from '../container/record.js';
import { rootfsPaths } from '../container/rootfs.js';
import { mountpointOf } from '../image/store/usage.js';
import type { SandboxRecord } from '../sandbox/types.js';
import { cgroupDirsOfPid, nowNs } from '../stats/cgroup.js';
import {
  containerMetrics,
  metricDescriptors,
  podNetworkMetrics,
  readCgroupMetrics,
  type MetricTarget,
} from '../stats/metrics.js';
import { dirUsage, netnsCounters } from '../stats/usage.js';
import { podNetnsPid } from '../stats/pod-netns.js';
import { join } from 'node:path';
import type { ServerContext } from './context.js';
import type { RuntimeImpl } from './rpc.js';

/** cAdvisor's container label for pod-level (infra) series. */
const POD_CONTAINER_LABEL = 'POD';

async function containerSeries(record: ContainerRecord, sandbox: SandboxRecord, device: string) {
  const target: MetricTarget = {
    pod: sandbox.metadata.name,
    namespace: sandbox.metadata.namespace,
    container: record.metadata.name,
    id: record.id,
    image: record.imageName,
  };
  const timestamp = nowNs();
  const layer = await dirUsage(rootfsPaths(record.containerDir).upper).catch(() => undefined);
  const writable = layer && { device, ...layer };
  const dirs =
    stateOf(record) === 'running' && record.pid > 0 ? await cgroupDirsOfPid(record.pid) : undefined;
  const sample = dirs ? await readCgroupMetrics(dirs) : {};
  return { containerId: record.id, metrics: containerMetrics(target, sample, timestamp, writable) };
}

async function podSeries(
  ctx: ServerContext,
  sandbox: SandboxRecord,
  device: string,
): Promise<PodSandboxMetrics> {
  const containers = ctx.containers.list().filter((c) => c.podSandboxId === sandbox.id);
  const netnsPid = podNetnsPid(sandbox, containers);
  const metrics =
    netnsPid > 0
      ? podNetworkMetrics(
          {
            pod: sandbox.metadata.name,
            namespace: sandbox.metadata.namespace,
            container: POD_CONTAINER_LABEL,
            id: sandbox.id,
            image: sandbox.infra.image,
          },
          (await netnsCounters(netnsPid)) ?? [],
          nowNs(),
        )
      : [];
  return PodSandboxMetrics.fromPartial({
    podSandboxId: sandbox.id,
    metrics,
    containerMetrics: await Promise.all(containers.map((c) => containerSeries(c, sandbox, device))),
  });
}

export function podMetricsRpcs(ctx: ServerContext): RuntimeImpl {
  let device: Promise<string> | undefined;
  return {
    listMetricDescriptors: async () =>
      ListMetricDescriptorsResponse.fromPartial({ descriptors: metricDescriptors() }),
    listPodSandboxMetrics: async () => {
      device ??= mountpointOf(join(ctx.config().root, 'containers')).catch(() => '/');
      const mountpoint = await device;
      const ready = ctx.sandboxes.list().filter((s) => s.phase === 'ready');
      return ListPodSandboxMetricsResponse.fromPartial({
        podMetrics: await Promise.all(ready.map((s) => podSeries(ctx, s, mountpoint))),
      });
    },
  };
}
