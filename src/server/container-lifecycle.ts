import {
  CreateContainerResponse,
  RemoveContainerResponse,
  StartContainerResponse,
  StopContainerResponse,
} from '../generated/api.js';
import { InvalidArgumentError } from '../errors.js';
import type { ServerContext } from './context.js';
import type { RuntimeImpl } from './rpc.js';

/** CreateContainer, StartContainer, StopContainer, RemoveContainer. */
export function containerLifecycleRpcs(ctx: ServerContext): RuntimeImpl {
  return {
    createContainer: async (request) => {
      if (!request.config) throw new InvalidArgumentError('CreateContainer: config is missing');
      const id = await ctx.containers.create(request.podSandboxId, request.config, request.sandboxConfig);
      return CreateContainerResponse.fromPartial({ containerId: id });
    },
    startContainer: async (request) => {
      await ctx.containers.start(request.containerId);
      return StartContainerResponse.fromPartial({});
    },
    stopContainer: async (request) => {
      if (request.timeout < 0n) {
        throw new InvalidArgumentError(
          `StopContainer ${request.containerId}: timeout ${request.timeout} is negative`,
        );
      }
      await ctx.containers.stop(request.containerId, Number(request.timeout));
      return StopContainerResponse.fromPartial({});
    },
    removeContainer: async (request) => {
      if (!request.containerId) throw new InvalidArgumentError('RemoveContainer: container ID is empty');
      await ctx.containers.remove(request.containerId);
      return RemoveContainerResponse.fromPartial({});
    },
  };
}
