import { stateOf, type ContainerRecord } from '../container/record.js';
import type { SandboxRecord } from '../sandbox/types.js';

/**
 * A process inside the pod's network namespace, whose /proc/PID/net shows the
 * pod's interfaces: the infra, or for a pod without one any running container
 * of it (none running: no process to read them through, 0).
 */
export function podNetnsPid(sandbox: SandboxRecord, containers: readonly ContainerRecord[]): number {
  if (sandbox.phase !== 'ready' || sandbox.namespaces.network !== 'pod') return 0;
  if (sandbox.infra.pid > 0) return sandbox.infra.pid;
  const running = containers.find(
    (c) => c.podSandboxId === sandbox.id && stateOf(c) === 'running' && c.pid > 0,
  );
  return running?.pid ?? 0;
}
