/** The OCI spec of a pod's infra (pause) container. */
import type { OciSpec } from '../types.js';
import type { SandboxSpecInput } from './types.js';
import { UnimplementedError } from '../../errors.js';

/**
 * Spec of the infra container: read-only rootfs, the pause argv, the pod's
 * namespaces (netns file or host; IPC/UTS new or host; PID new for a pod-shared
 * PID namespace, host for NODE), sysctls, cgroupsPath under the pod's parent,
 * overhead+resources, clamped oom_score_adj, the pod's /dev/shm, seccomp,
 * no_new_privs, annotations.
 */
export function buildSandboxSpec(input: SandboxSpecInput): OciSpec {
  throw new UnimplementedError(`sandbox ${input.id}: spec generation not written yet`);
}
