/**
 * The streaming server's view of berth's containers and pods: containers by
 * ID (or unique prefix) from the container manager, stdio through the OCI
 * engine (exec) or conmon's attach socket, and a pod's network namespace from
 * its sandbox record (the node's own for host-network pods).
 */
import { dirname, join } from 'node:path';
import { FailedPreconditionError } from '../errors.js';
import type { ContainerManager } from '../container/manager.js';
import { stateOf, type ContainerRecord } from '../container/record.js';
import type { ConmonEngine } from '../oci/engine.js';
import type { SandboxManager } from '../sandbox/manager.js';
import type { StreamBackend } from './types.js';

export interface CriBackendDeps {
  readonly containers: ContainerManager;
  readonly sandboxes: SandboxManager;
  readonly engine: ConmonEngine;
}

function running(deps: CriBackendDeps, id: string, what: string): ContainerRecord {
  const record = deps.containers.get(id);
  const state = stateOf(record);
  if (state !== 'running') {
    throw new FailedPreconditionError(
      `${what} container ${record.id} (${record.name}): it is ${state}, not running`,
    );
  }
  return record;
}

export function criStreamBackend(deps: CriBackendDeps): StreamBackend {
  return {
    async resolveExec(containerId) {
      const record = running(deps, containerId, 'exec in');
      const handler = deps.containers.handlerOf(record);
      return {
        start: (args: string[], tty: boolean) => deps.engine.exec({ id: record.id, handler, args, tty }),
      };
    },
    async resolveAttach(containerId) {
      const record = running(deps, containerId, 'attach to');
      const socketPath = deps.engine.attachSocketPath(record.id);
      return {
        socketPath,
        // conmon's attach directory links to the bundle, where its ctl fifo lives.
        ctlPath: join(dirname(socketPath), 'ctl'),
        tty: record.tty,
        stdin: record.stdin,
        stdinOnce: record.stdinOnce,
      };
    },
    async resolvePortForward(podSandboxId) {
      const sandbox = deps.sandboxes.get(podSandboxId);
      if (!deps.sandboxes.isReady(sandbox)) {
        throw new FailedPreconditionError(`port forward to pod sandbox ${sandbox.id}: it is not ready`);
      }
      if (sandbox.namespaces.network !== 'pod') return { netnsPath: '/proc/self/ns/net' };
      if (!sandbox.netnsPath) {
        throw new FailedPreconditionError(
          `port forward to pod sandbox ${sandbox.id}: it has no network namespace`,
        );
      }
      return { netnsPath: sandbox.netnsPath };
    },
  };
}
