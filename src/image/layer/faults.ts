/**
 * What layer workers throw. Kept free of gRPC (src/errors.ts loads all of
 * @grpc/grpc-js, megabytes of heap in every worker); the main thread turns a
 * fault into the matching BerthError (see ingest.ts).
 */
export type FaultKind = 'rejected' | 'mismatch' | 'internal';

export class LayerFault extends Error {
  constructor(
    readonly kind: FaultKind,
    message: string,
  ) {
    super(message);
    this.name = 'LayerFault';
  }
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** Node system error code (ENOENT, ...) of a thrown value, if any. */
export function errnoCode(err: unknown): string | undefined {
  if (typeof err === 'object' && err !== null && 'code' in err && typeof err.code === 'string')
    return err.code;
  return undefined;
}
