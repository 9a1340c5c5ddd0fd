import {
  ExecSyncResponse,
  ReopenContainerLogResponse,
  UpdateContainerResourcesResponse,
} from '../generated/api.js';
import { InvalidArgumentError } from '../errors.js';
import type { ServerContext } from './context.js';
import type { RuntimeImpl } from './rpc.js';

/** ExecSync, UpdateContainerResources, ReopenContainerLog. */
export function containerExecRpcs(ctx: ServerContext): RuntimeImpl {
  return {
    execSync: async (request, call) => {
      if (request.timeout < 0n) {
        throw new InvalidArgumentError(
          `ExecSync in ${request.containerId}: timeout ${request.timeout} is negative`,
        );
      }
      const result = await ctx.containers.execSync(
        request.containerId,
        request.cmd,
        Number(request.timeout),
        call.signal,
      );
      return ExecSyncResponse.fromPartial(result);
    },
    updateContainerResources: async (request) => {
      await ctx.containers.updateResources(request.containerId, request.linux);
      return UpdateContainerResourcesResponse.fromPartial({});
    },
    reopenContainerLog: async (request) => {
      await ctx.containers.reopenLog(request.containerId);
      return ReopenContainerLogResponse.fromPartial({});
    },
  };
}
