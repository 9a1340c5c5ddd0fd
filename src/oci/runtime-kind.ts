/**
 * Which OCI runtime a handler runs. berth adapts to a few (runc's exec FIFO
 * start, CNI beside runc's/crun's infra start, runsc's sandbox shim, user
 * namespaces on runc), so the kind must not hang on the binary being named
 * exactly `runc`: runtime.handlers.NAME.kind says it, or else the binary's
 * name does, where `runc-1.2` and `runc.real` are runc too.
 */
import { basename } from 'node:path';
import type { RuntimeHandler } from './types.js';

export const RUNTIME_KINDS = ['runc', 'crun', 'runsc', 'other'] as const;
export type RuntimeKind = (typeof RUNTIME_KINDS)[number];

export function kindFromName(path: string): RuntimeKind {
  const match = /^(runc|crun|runsc)(?:[-_.].*)?$/.exec(basename(path));
  return (match?.[1] as RuntimeKind | undefined) ?? 'other';
}

export function runtimeKind(handler: RuntimeHandler): RuntimeKind {
  return handler.kind ?? kindFromName(handler.path);
}
