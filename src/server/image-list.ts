import { ListImagesResponse } from '../generated/api.js';
import type { ServerContext } from './context.js';
import type { ImageImpl } from './rpc.js';
import { toCriImage } from './image-status.js';

export function imageListRpcs(ctx: ServerContext): ImageImpl {
  return {
    listImages: async (request) => {
      const ref = request.filter?.image?.image ?? '';
      let records;
      if (ref === '') {
        records = await ctx.images.list();
      } else {
        // A filter names one image (by any reference form); a malformed one is INVALID_ARGUMENT.
        const found = await ctx.images.resolve(ref);
        records = found ? [found.record] : [];
      }
      records.sort((a, b) => a.id.localeCompare(b.id));
      const images = await Promise.all(records.map((r) => toCriImage(ctx.images, r)));
      return ListImagesResponse.fromPartial({ images });
    },
  };
}
