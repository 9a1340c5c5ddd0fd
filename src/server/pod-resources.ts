/**
 * UpdatePodSandboxResources (in-place pod-level resize): validated like
 * container resources, then recorded on the pod. An unknown pod is NOT_FOUND,
 * a pod that is not ready FAILED_PRECONDITION.
 */
import { UpdatePodSandboxResourcesResponse } from '../generated/api.js';
import { FailedPreconditionError } from '../errors.js';
import { linuxResources } from '../oci/spec/resources.js';
import type { ServerContext } from './context.js';
import type { RuntimeImpl } from './rpc.js';

export function podResourcesRpcs(ctx: ServerContext): RuntimeImpl {
  return {
    updatePodSandboxResources: async (request) => {
      const sandbox = ctx.sandboxes.get(request.podSandboxId);
      const what = `UpdatePodSandboxResources of pod sandbox ${sandbox.id} (${sandbox.metadata.namespace}/${sandbox.metadata.name})`;
      if (sandbox.phase !== 'ready') throw new FailedPreconditionError(`${what}: the pod is not ready`);
      // Throws InvalidArgument naming the field for impossible values.
      linuxResources(request.overhead, ctx.specHost, `${what}: overhead`);
      linuxResources(request.resources, ctx.specHost, `${what}: resources`);
      await ctx.sandboxes.updateResources(sandbox.id, request.overhead, request.resources);
      return UpdatePodSandboxResourcesResponse.fromPartial({});
    },
  };
}
