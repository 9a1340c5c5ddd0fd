import { RemoveImageResponse } from '../generated/api.js';
import { InvalidArgumentError } from '../errors.js';
import type { ServerContext } from './context.js';
import type { ImageImpl } from './rpc.js';

export function imageRemoveRpcs(ctx: ServerContext): ImageImpl {
  return {
    removeImage: async (request) => {
      const ref = request.image?.image ?? '';
      if (ref === '') throw new InvalidArgumentError('RemoveImage: image reference is empty');
      // Idempotent: an absent image is success.
      await ctx.images.remove(ref);
      return RemoveImageResponse.fromPartial({});
    },
  };
}
