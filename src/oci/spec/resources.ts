/** CRI LinuxContainerResources → OCI linux.resources, for cgroup v1 and v2. */
import type { LinuxContainerResources } from '../../generated/api.js';
import type { OciResources, SpecHost } from './types.js';
import { UnimplementedError } from '../../errors.js';

/**
 * linux.resources for a container (also what UpdateContainerResources passes
 * to the engine's update()). `what` names the object in error messages.
 * Does not include linux.resources.devices.
 */
export function linuxResources(
  resources: LinuxContainerResources | undefined,
  host: SpecHost,
  what: string,
): OciResources {
  void resources;
  void host;
  throw new UnimplementedError(`${what}: resources not written yet`);
}
