/** The OCI spec of a workload container. */
import type { ContainerSpecInput, ContainerSpecResult } from './types.js';
import { UnimplementedError } from '../../errors.js';

/**
 * Spec of a workload container from its ContainerConfig, the pod, the image
 * config and the mounted rootfs (users resolved in its /etc/passwd and
 * /etc/group). Returns the spec, the resolved user, the stop signal and the
 * validated bind mounts.
 */
export function buildContainerSpec(input: ContainerSpecInput): Promise<ContainerSpecResult> {
  return Promise.reject(new UnimplementedError(`container ${input.id}: spec generation not written yet`));
}
