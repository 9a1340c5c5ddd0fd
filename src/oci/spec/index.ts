/**
 * OCI spec generation for berth: the infra (pause) container of a pod and the
 * workload containers, from the CRI configs, the image config and host facts.
 *
 * Call detectSpecHost() once at start-up and pass the SpecHost to every build.
 * Builders validate their input and throw InvalidArgumentError (bad mounts,
 * paths, users, capabilities, profiles) or FailedPreconditionError (something
 * the host or runtime cannot do, e.g. AppArmor or recursive read-only) whose
 * message names the container/pod and the cause.
 */
export type * from './types.js';
export {
  detectSpecHost,
  canLowerOomScore,
  clampOomScoreAdj,
  runtimeFeatures,
  supportsRecursiveReadOnly,
  type DetectOptions,
} from './host.js';
export { buildSandboxSpec } from './sandbox.js';
export { buildContainerSpec } from './container.js';
export { linuxResources } from './resources.js';
export { stopSignalOf } from './process.js';
