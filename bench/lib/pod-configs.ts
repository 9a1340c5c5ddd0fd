/**
 * What the benchmarks ask of a runtime, the same for berth and its peers: a
 * pod as kubelet sends it (own network and IPC namespace, no shared PID
 * namespace), the busybox workload in it, and an exec of `true`.
 */
import { ContainerConfig, NamespaceMode, PodSandboxConfig } from '../../src/generated/api.js';
import { WORKLOAD_IMAGE } from './images.js';

/** As kubelet sends them for a pod without shareProcessNamespace or host namespaces. */
export const KUBELET_NAMESPACES = {
  network: NamespaceMode.POD,
  pid: NamespaceMode.CONTAINER,
  ipc: NamespaceMode.POD,
};

export function benchSandboxConfig(pod: {
  name: string;
  hostname: string;
  uid: string;
  logDirectory: string;
}): PodSandboxConfig {
  return PodSandboxConfig.fromPartial({
    metadata: { name: pod.name, uid: pod.uid, namespace: 'bench', attempt: 0 },
    hostname: pod.hostname,
    logDirectory: pod.logDirectory,
    linux: { securityContext: { namespaceOptions: KUBELET_NAMESPACES } },
  });
}

/** The workload container (the image's `sleep`). */
export function workloadConfig(): ContainerConfig {
  return ContainerConfig.fromPartial({
    metadata: { name: 'work', attempt: 0 },
    image: { image: WORKLOAD_IMAGE },
    logPath: 'work.log',
    linux: { securityContext: { namespaceOptions: KUBELET_NAMESPACES } },
  });
}

/** An Exec request for `true` with stdout only (what the exec round trip measures). */
export function execTrueRequest(containerId: string) {
  return { containerId, cmd: ['true'], tty: false, stdin: false, stdout: true, stderr: false };
}
