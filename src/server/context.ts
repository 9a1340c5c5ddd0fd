import type { BerthConfig } from '../config/schema.js';
import type { Logger } from '../log.js';
import type { ImageManager } from '../image/manager.js';
import type { ContainerManager } from '../container/manager.js';
import type { ConmonEngine } from '../oci/engine.js';
import type { SpecHost } from '../oci/spec/index.js';
import type { PodNetwork } from '../sandbox/network-types.js';
import type { SandboxManager } from '../sandbox/manager.js';

/**
 * What RPC handlers share. Subsystems (images, sandboxes, containers,
 * streaming) add their managers here; the daemon wires them.
 */
export interface ServerContext {
  /** The current configuration; SIGHUP may replace reloadable parts. */
  config(): BerthConfig;
  log: Logger;
  /** Effective cgroup driver after detection. */
  cgroupDriver: 'cgroupfs' | 'systemd';
  /** Path of the file(s) the config was loaded from, for Status verbose. */
  configFiles: string[];
  /** Pod CIDRs last given by kubelet through UpdateRuntimeConfig. */
  podCidrs: string[];
  /**
   * Images: resolve references, layer dirs, pinning, removal; `images.store`
   * is the BlobSink pulls write to. Opened (and reconciled) by Daemon.start
   * before the server accepts calls; reading it earlier throws.
   */
  readonly images: ImageManager;
  /** The OCI engine (conmon + runtimes); set up by Daemon.start. */
  readonly engine: ConmonEngine;
  /** Host facts for spec generation, detected once by Daemon.start. */
  readonly specHost: SpecHost;
  /** Pod networking (netns + CNI). */
  readonly network: PodNetwork;
  /** Pod sandboxes (records reconciled at start-up); also what containers use to find their pod. */
  readonly sandboxes: SandboxManager;
  /** Containers (records reconciled at start-up after the sandboxes); stats through `containers.stats`. */
  readonly containers: ContainerManager;
}
