import { PullImageResponse } from '../generated/api.js';
import { InvalidArgumentError } from '../errors.js';
import { Puller } from '../image/pull/puller.js';
import type { ServerContext } from './context.js';
import type { ImageImpl } from './rpc.js';

/**
 * PullImage. One Puller per daemon, so concurrent pulls of an image share a
 * download. The answer's image_ref is the image ID (config digest), the same
 * ID ListImages and ImageStatus report.
 */
export function imagePullRpcs(ctx: ServerContext): ImageImpl {
  let puller: Puller | undefined;
  return {
    pullImage: async (request, call) => {
      const ref = request.image?.image ?? '';
      if (ref === '') throw new InvalidArgumentError('PullImage: image reference is empty');
      puller ??= new Puller(ctx.images.store, ctx.config, ctx.log.child({ component: 'pull' }));
      const record = await puller.pull(ref, { auth: request.auth, signal: call.signal });
      return PullImageResponse.fromPartial({ imageRef: record.id });
    },
  };
}
