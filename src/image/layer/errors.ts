/** gRPC errors for layer content (the main thread turns layer workers' faults into these). */
import { status as GrpcStatus } from '@grpc/grpc-js';
import { BerthError } from '../../errors.js';

/** A layer whose content berth refuses (unsafe or malformed): INVALID_ARGUMENT. */
export class LayerRejectedError extends BerthError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(GrpcStatus.INVALID_ARGUMENT, message, options);
  }
}

/** Content whose digest or size differs from what was announced: DATA_LOSS. */
export class ContentMismatchError extends BerthError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(GrpcStatus.DATA_LOSS, message, options);
  }
}
