import { RemovePodSandboxResponse, RunPodSandboxResponse, StopPodSandboxResponse } from '../generated/api.js';
import { InvalidArgumentError } from '../errors.js';
import type { ServerContext } from './context.js';
import type { RuntimeImpl } from './rpc.js';

/** RunPodSandbox, StopPodSandbox, RemovePodSandbox. */
export function podLifecycleRpcs(ctx: ServerContext): RuntimeImpl {
  return {
    runPodSandbox: async (request) => {
      const podSandboxId = await ctx.sandboxes.run(request);
      return RunPodSandboxResponse.fromPartial({ podSandboxId });
    },
    stopPodSandbox: async (request) => {
      if (request.podSandboxId === '')
        throw new InvalidArgumentError('StopPodSandbox: pod sandbox ID is empty');
      // CRI: stopping an unknown or already stopped pod is not an error.
      await ctx.sandboxes.stop(request.podSandboxId);
      return StopPodSandboxResponse.fromPartial({});
    },
    removePodSandbox: async (request) => {
      if (request.podSandboxId === '')
        throw new InvalidArgumentError('RemovePodSandbox: pod sandbox ID is empty');
      await ctx.sandboxes.remove(request.podSandboxId);
      return RemovePodSandboxResponse.fromPartial({});
    },
  };
}
