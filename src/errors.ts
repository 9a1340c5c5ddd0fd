import { status as GrpcStatus } from '@grpc/grpc-js';

/**
 * Errors that cross the gRPC boundary carry the status code kubelet should see.
 * Each message must name the object and the cause.
 */
export class BerthError extends Error {
  readonly code: GrpcStatus;
  constructor(code: GrpcStatus, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}

export class InvalidArgumentError extends BerthError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(GrpcStatus.INVALID_ARGUMENT, message, options);
  }
}
export class NotFoundError extends BerthError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(GrpcStatus.NOT_FOUND, message, options);
  }
}
export class AlreadyExistsError extends BerthError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(GrpcStatus.ALREADY_EXISTS, message, options);
  }
}
export class FailedPreconditionError extends BerthError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(GrpcStatus.FAILED_PRECONDITION, message, options);
  }
}
export class UnavailableError extends BerthError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(GrpcStatus.UNAVAILABLE, message, options);
  }
}
export class UnauthenticatedError extends BerthError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(GrpcStatus.UNAUTHENTICATED, message, options);
  }
}
export class PermissionDeniedError extends BerthError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(GrpcStatus.PERMISSION_DENIED, message, options);
  }
}
export class DeadlineExceededError extends BerthError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(GrpcStatus.DEADLINE_EXCEEDED, message, options);
  }
}
export class ResourceExhaustedError extends BerthError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(GrpcStatus.RESOURCE_EXHAUSTED, message, options);
  }
}
export class UnimplementedError extends BerthError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(GrpcStatus.UNIMPLEMENTED, message, options);
  }
}
export class InternalError extends BerthError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(GrpcStatus.INTERNAL, message, options);
  }
}

export { errnoCode, errorMessage } from './util/thrown.js';
