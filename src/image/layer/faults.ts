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

export { errnoCode, errorMessage } from '../../util/thrown.js';
