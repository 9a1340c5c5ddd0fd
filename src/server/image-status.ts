import { Image, ImageStatusResponse } from '../generated/api.js';
import { InvalidArgumentError } from '../errors.js';
import type { ImageManager } from '../image/manager.js';
import type { ImageRecord } from '../image/types.js';
import type { ServerContext } from './context.js';
import type { ImageImpl } from './rpc.js';

/** The image's user as CRI wants it: a numeric uid, or a user name. */
function imageUser(record: ImageRecord): { uid?: { value: bigint }; username: string } {
  const user = (record.config.config?.User ?? '').split(':')[0];
  if (user === '') return { username: '' };
  if (/^\d+$/.test(user)) return { uid: { value: BigInt(user) }, username: '' };
  return { username: user };
}

/** An ImageRecord as a CRI Image message. */
export async function toCriImage(images: ImageManager, record: ImageRecord): Promise<Image> {
  return Image.fromPartial({
    id: record.id,
    repoTags: record.repoTags,
    repoDigests: record.repoDigests,
    size: BigInt(record.size),
    ...imageUser(record),
    spec: { image: record.id, annotations: {} },
    pinned: await images.isPinned(record),
  });
}

/** An artifact's config must fit the reply: most are `{}` or a small JSON; a big one is named, not sent. */
const MAX_ARTIFACT_CONFIG_BYTES = 1024 * 1024;

async function artifactConfigText(ctx: ServerContext, digest: string): Promise<string> {
  const size = await ctx.images.store.blobs.size(digest);
  if (size > MAX_ARTIFACT_CONFIG_BYTES) return `(config ${digest}: ${size} bytes, not shown)`;
  return Buffer.from(await ctx.images.store.readBlob(digest)).toString('utf8');
}

export function imageStatusRpcs(ctx: ServerContext): ImageImpl {
  return {
    imageStatus: async (request) => {
      const ref = request.image?.image ?? '';
      if (ref === '') throw new InvalidArgumentError('ImageStatus: image reference is empty');
      const found = await ctx.images.resolve(ref);
      // CRI: an absent image is an empty response, not an error.
      if (!found) return ImageStatusResponse.fromPartial({});
      const { record } = found;
      const info: Record<string, string> = {};
      if (request.verbose) {
        const manifest = Buffer.from(await ctx.images.store.readBlob(record.manifestDigest)).toString('utf8');
        info.manifest = manifest;
        const { artifact } = record;
        info.config = artifact
          ? await artifactConfigText(ctx, artifact.configDigest)
          : JSON.stringify(record.config);
        info.info = JSON.stringify({
          id: record.id,
          manifestDigest: record.manifestDigest,
          manifestMediaType: record.manifestMediaType,
          createdAtNs: record.createdAtNs,
          ...(artifact
            ? { artifact, filesDir: ctx.images.volumeDirs(record)[0] }
            : { layers: record.layers, layerDirs: ctx.images.layerDirs(record), imageSpec: record.config }),
        });
      }
      return ImageStatusResponse.fromPartial({ image: await toCriImage(ctx.images, record), info });
    },
  };
}
