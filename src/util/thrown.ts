/**
 * Helpers for thrown values, free of gRPC so layer worker threads can load
 * them without @grpc/grpc-js (src/errors.ts re-exports them).
 */

/** Message of any thrown value, for wrapping causes into berth errors. */
export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** Node system error code (ENOENT, EEXIST, ...) of a thrown value, if any. */
export function errnoCode(err: unknown): string | undefined {
  if (typeof err === 'object' && err !== null && 'code' in err && typeof err.code === 'string')
    return err.code;
  return undefined;
}
