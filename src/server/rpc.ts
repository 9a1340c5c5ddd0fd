import type { handleServerStreamingCall, handleUnaryCall } from '@grpc/grpc-js';
import type { Logger } from '../log.js';
import { RuntimeServiceService, ImageServiceService } from '../generated/api.js';

/** What a handler knows about the call it serves. */
export interface CallInfo {
  /** Aborted when the client cancels or the deadline passes. */
  signal: AbortSignal;
  /** Logger bound to this call (rpc name). */
  log: Logger;
}

export type UnaryImpl<Req, Res> = (request: Req, call: CallInfo) => Promise<Res>;
/** A server-streaming RPC: call `send` for each message, resolve to end the stream. */
export type StreamImpl<Req, Res> = (
  request: Req,
  send: (response: Res) => void,
  call: CallInfo,
) => Promise<void>;

type ImplOf<Def> = {
  -readonly [K in keyof Def]?: Def[K] extends {
    responseStream: true;
    requestDeserialize: (b: Buffer) => infer Q;
    responseSerialize: (r: infer R) => Buffer;
  }
    ? StreamImpl<Q, R>
    : Def[K] extends { requestDeserialize: (b: Buffer) => infer Q; responseSerialize: (r: infer R) => Buffer }
      ? UnaryImpl<Q, R>
      : never;
};

/** RuntimeService handlers by ts-proto method name (version, runPodSandbox, ...). */
export type RuntimeImpl = ImplOf<typeof RuntimeServiceService>;
/** ImageService handlers by method name (pullImage, listImages, ...). */
export type ImageImpl = ImplOf<typeof ImageServiceService>;

export type AnyUnaryCall = handleUnaryCall<unknown, unknown>;
export type AnyStreamCall = handleServerStreamingCall<unknown, unknown>;
