/**
 * The persisted container record (one JSON file per container under
 * <root>/state/containers) and the CRI views derived from it.
 */
import { ContainerState } from '../generated/api.js';
import { InternalError } from '../errors.js';
import type { RuntimeHandler } from '../oci/types.js';
import type { ImageVolumeRecord } from './image-volumes.js';

/**
 * 'creating': CreateContainer is under way; the record exists first so a
 * crash leaves a trace start-up can undo. Never shown to kubelet.
 */
export type ContainerPhase = 'creating' | 'created';

export interface ContainerRecord {
  version: 1;
  id: string;
  podSandboxId: string;
  /** Reserved name: k8s_<name>_<pod>_<namespace>_<uid>_<attempt>. */
  name: string;
  metadata: { name: string; attempt: number };
  phase: ContainerPhase;
  labels: Record<string, string>;
  annotations: Record<string, string>;
  /** ImageSpec as kubelet gave it (ImageSpec.toJSON form). */
  imageSpec: unknown;
  /** The name shown as status.image: the tag it resolved through, else the reference. */
  imageName: string;
  /** Image ID (config digest). */
  imageId: string;
  /** Nanoseconds since the epoch, decimal strings (JSON has no bigint). */
  createdAtNs: string;
  startedAtNs?: string;
  finishedAtNs?: string;
  exitCode?: number;
  reason?: string;
  message?: string;
  logPath: string;
  /** ContainerConfig.mounts (Mount.toJSON form). */
  mounts: unknown[];
  /** The images its image volumes mount (absent in records from before image volumes). */
  imageVolumes?: ImageVolumeRecord[];
  /** LinuxContainerResources.toJSON form; updated by UpdateContainerResources. */
  resources?: unknown;
  user?: { uid: number; gid: number; additionalGids: number[] };
  stopSignal: string;
  /** Runtime handler name (the pod's). */
  handler: string;
  /** The handler as configured at create: stop and remove keep working if the config drops it. */
  runtime: RuntimeHandler;
  /** <root>/containers/<id>: rootfs (upper, work, merged) and bundle. */
  containerDir: string;
  bundleDir: string;
  /** Container pid after create (0 before). */
  pid: number;
  tty: boolean;
  stdin: boolean;
  stdinOnce: boolean;
  /** ContainerConfig.toJSON form, for verbose status. */
  config: unknown;
}

export type ContainerStateName = 'created' | 'running' | 'exited';

export function stateOf(record: ContainerRecord): ContainerStateName {
  if (record.finishedAtNs !== undefined) return 'exited';
  if (record.startedAtNs !== undefined) return 'running';
  return 'created';
}

export function criState(record: ContainerRecord): ContainerState {
  switch (stateOf(record)) {
    case 'exited':
      return ContainerState.CONTAINER_EXITED;
    case 'running':
      return ContainerState.CONTAINER_RUNNING;
    default:
      return ContainerState.CONTAINER_CREATED;
  }
}

/**
 * Names are free-form in CRI; berth only refuses what would break its
 * reserved names and logs: empty, '/', NUL or newlines, or absurd lengths.
 */
export const CONTAINER_NAME_RE = /^[^/\0\n\r]{1,253}$/;

/** The reserved name CRI-O and containerd use: k8s_<name>_<pod>_<namespace>_<uid>_<attempt>. */
export function containerName(
  metadata: { name: string; attempt: number },
  pod: { name: string; namespace: string; uid: string },
): string {
  return ['k8s', metadata.name, pod.name, pod.namespace, pod.uid, String(metadata.attempt)].join('_');
}

/** Shape check of a loaded record (RecordStore parser). */
export function parseContainerRecord(value: unknown): ContainerRecord {
  const r = value as Partial<ContainerRecord> | null;
  if (
    !r ||
    typeof r !== 'object' ||
    r.version !== 1 ||
    typeof r.id !== 'string' ||
    typeof r.podSandboxId !== 'string' ||
    typeof r.name !== 'string' ||
    (r.phase !== 'creating' && r.phase !== 'created') ||
    typeof r.containerDir !== 'string' ||
    typeof r.bundleDir !== 'string' ||
    typeof r.handler !== 'string' ||
    typeof r.runtime !== 'object' ||
    typeof r.createdAtNs !== 'string'
  ) {
    throw new InternalError('not a version 1 container record');
  }
  return r as ContainerRecord;
}
