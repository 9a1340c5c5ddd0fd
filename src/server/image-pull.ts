import { PullImageResponse } from '../generated/api.js';
import { InvalidArgumentError } from '../errors.js';
import { Puller } from '../image/pull/puller.js';
import type { ServerContext } from './context.js';
import type { ImageImpl } from './rpc.js';

/**
 * PullImage, through the store's shared Puller, so concurrent pulls of an
 * image share a download. The answer's image_ref is the image ID (config
 * digest), the same ID ListImages and ImageStatus report.
 */
export function imagePullRpcs(ctx: ServerContext): ImageImpl {
  return {
    pullImage: async (request, call) => {
      const ref = request.image?.image ?? '';
      if (ref === '') throw new InvalidArgumentError('PullImage: image reference is empty');
      const puller = Puller.for(ctx.images, ctx.config, ctx.log.child({ component: 'pull' }));
      const record = await puller.pull(ref, { auth: request.auth, signal: call.signal });
      return PullImageResponse.fromPartial({ imageRef: record.id });
    },
  };
}
