import { AttachResponse, ExecResponse, PortForwardResponse } from '../generated/api.js';
import { UnavailableError } from '../errors.js';
import type { StreamServer } from '../stream/server.js';
import type { RuntimeImpl } from './rpc.js';

/** Exec, Attach, PortForward: validate, then hand out a single-use URL on the streaming server. */
export function streamRpcs(server: () => StreamServer | undefined): RuntimeImpl {
  const streaming = (): StreamServer => {
    const s = server();
    if (!s) throw new UnavailableError('the streaming server is not running');
    return s;
  };
  return {
    exec: async (request) => ExecResponse.fromPartial({ url: await streaming().exec(request) }),
    attach: async (request) => AttachResponse.fromPartial({ url: await streaming().attach(request) }),
    portForward: async (request) =>
      PortForwardResponse.fromPartial({ url: await streaming().portForward(request) }),
  };
}
