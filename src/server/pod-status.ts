import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  ListPodSandboxResponse,
  NamespaceOption,
  PodSandbox,
  PodSandboxConfig,
  PodSandboxState,
  PodSandboxStatusResponse,
  type ContainerStatus,
} from '../generated/api.js';
import { BerthError, InvalidArgumentError, NotFoundError } from '../errors.js';
import type { SandboxRecord } from '../sandbox/types.js';
import type { ServerContext } from './context.js';
import { containerStatusRpcs } from './container-status.js';
import type { CallInfo, RuntimeImpl } from './rpc.js';

function criState(record: SandboxRecord): PodSandboxState {
  return record.phase === 'ready' ? PodSandboxState.SANDBOX_READY : PodSandboxState.SANDBOX_NOTREADY;
}

function namespaceOptions(record: SandboxRecord): NamespaceOption {
  const config = PodSandboxConfig.fromJSON(record.config);
  return NamespaceOption.fromPartial(config.linux?.securityContext?.namespaceOptions ?? {});
}

export function toCriPodSandbox(record: SandboxRecord): PodSandbox {
  return PodSandbox.fromPartial({
    id: record.id,
    metadata: record.metadata,
    state: criState(record),
    createdAt: BigInt(record.createdAtNs),
    labels: record.labels,
    annotations: record.annotations,
    runtimeHandler: record.runtimeHandler,
  });
}

/** The verbose `info` of PodSandboxStatus: what berth knows beyond the CRI fields. */
async function verboseInfo(ctx: ServerContext, record: SandboxRecord): Promise<Record<string, string>> {
  const handler = ctx.sandboxes.handlerOf(record);
  const state = record.pinned ? undefined : await ctx.engine.state(record.id, handler).catch(() => undefined);
  let runtimeSpec: unknown;
  try {
    runtimeSpec = JSON.parse(await readFile(join(record.infra.bundleDir, 'config.json'), 'utf8')) as unknown;
  } catch {
    runtimeSpec = undefined;
  }
  const info = {
    pid: record.infra.pid,
    // Without an infra there is no process: 'none', against 'deleted' for an infra that is gone.
    processStatus: record.pinned ? 'none' : (state?.status ?? 'deleted'),
    infra: record.pinned ? 'dropped' : 'container',
    pinnedNamespaces: record.pinned ?? {},
    netNamespaceClosed: record.namespaces.network === 'pod' && !record.netnsPath,
    netnsPath: record.netnsPath ?? '',
    image: record.infra.image,
    runtimeHandler: record.runtimeHandler,
    runtimeType: handler.type,
    runtime: { path: handler.path, root: handler.root, args: handler.runtimeArgs ?? [] },
    name: record.name,
    podDir: record.podDir,
    shmPath: record.shmPath,
    hostname: record.hostname,
    resolvConfPath: record.resolvConfPath,
    hostsPath: record.hostsPath,
    cgroupParent: record.cgroupParent,
    sysctls: record.sysctls,
    portMappings: record.portMappings,
    namespaces: record.namespaces,
    stoppedAt: record.stoppedAtNs ?? '',
    config: record.config,
    runtimeSpec,
    cniNetwork: record.network?.name ?? '',
    cniResult: record.network?.result,
  };
  return { info: JSON.stringify(info) };
}

/** PodSandboxStatus and ListPodSandbox. */
export function podStatusRpcs(ctx: ServerContext): RuntimeImpl {
  const containerRpcs = containerStatusRpcs(ctx);
  /** The pod's containers as ContainerStatus reports them (kubelet's Evented PLEG reads these). */
  const containerStatuses = async (podId: string, call: CallInfo): Promise<ContainerStatus[]> => {
    const statuses: ContainerStatus[] = [];
    for (const record of ctx.containers.list()) {
      if (record.podSandboxId !== podId) continue;
      try {
        const { status } = await containerRpcs.containerStatus!(
          { containerId: record.id, verbose: false },
          call,
        );
        if (status) statuses.push(status);
      } catch (err) {
        // Removed meanwhile.
        if (!(err instanceof BerthError)) throw err;
      }
    }
    return statuses;
  };
  return {
    podSandboxStatus: async (request, call) => {
      if (request.podSandboxId === '')
        throw new InvalidArgumentError('PodSandboxStatus: pod sandbox ID is empty');
      const record = ctx.sandboxes.find(request.podSandboxId);
      if (!record) throw new NotFoundError(`pod sandbox ${JSON.stringify(request.podSandboxId)} not found`);
      const [ip, ...additional] = record.ips;
      return PodSandboxStatusResponse.fromPartial({
        status: {
          id: record.id,
          metadata: record.metadata,
          state: criState(record),
          createdAt: BigInt(record.createdAtNs),
          network: { ip: ip ?? '', additionalIps: additional.map((a) => ({ ip: a })) },
          linux: { namespaces: { options: namespaceOptions(record) } },
          labels: record.labels,
          annotations: record.annotations,
          runtimeHandler: record.runtimeHandler,
        },
        info: request.verbose ? await verboseInfo(ctx, record) : {},
        containersStatuses: await containerStatuses(record.id, call),
        timestamp: BigInt(Date.now()) * 1_000_000n,
      });
    },
    listPodSandbox: (request) => {
      const items = ctx.sandboxes.filter(request.filter).map(toCriPodSandbox);
      return Promise.resolve(ListPodSandboxResponse.fromPartial({ items }));
    },
  };
}
