/**
 * The contract between pod networking (src/sandbox/network*) and the
 * sandbox lifecycle that uses it.
 */

export interface PodIdentity {
  id: string;
  name: string;
  namespace: string;
  uid: string;
}

export interface HostPortMapping {
  protocol: 'tcp' | 'udp' | 'sctp';
  containerPort: number;
  hostPort: number;
  hostIP: string;
}

export interface PodNetworkStatus {
  /** All IPs the CNI result gave the pod's interface(s), primary first. */
  ips: string[];
  /** Name of the CNI network used. */
  networkName: string;
  /** Raw CNI ADD result, kept for CNI DEL/CHECK (prevResult) and verbose status. */
  result: unknown;
}

/** Pod network namespaces and CNI attachment. */
export interface PodNetwork {
  /** Creates a new persistent network namespace; returns its path (bind-mounted nsfs). */
  createNetns(podId: string): Promise<string>;
  /** Unmounts and removes a namespace made by createNetns. Idempotent. */
  removeNetns(path: string): Promise<void>;
  /** CNI ADD of the pod into the netns (with portMappings capability). */
  attach(pod: PodIdentity, netnsPath: string, portMappings: HostPortMapping[]): Promise<PodNetworkStatus>;
  /** CNI DEL; idempotent, tolerates a netns that is already gone. */
  detach(
    pod: PodIdentity,
    netnsPath: string | undefined,
    portMappings: HostPortMapping[],
    prevResult?: unknown,
  ): Promise<void>;
  /** Readiness for Status's NetworkReady condition. */
  ready(): Promise<{ ok: true } | { ok: false; reason: string; message: string }>;
}
