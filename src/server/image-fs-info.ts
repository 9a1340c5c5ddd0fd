import { ImageFsInfoResponse, type FilesystemUsage } from '../generated/api.js';
import type { FsUsage } from '../image/manager.js';
import type { ServerContext } from './context.js';
import type { ImageImpl } from './rpc.js';

function usage(u: FsUsage, timestamp: bigint): FilesystemUsage {
  return {
    timestamp,
    fsId: { mountpoint: u.mountpoint },
    usedBytes: { value: u.bytes },
    inodesUsed: { value: u.inodes },
  };
}

export function imageFsInfoRpcs(ctx: ServerContext): ImageImpl {
  return {
    imageFsInfo: async () => {
      const { images, containers } = await ctx.images.fsUsage();
      const now = BigInt(Date.now()) * 1_000_000n;
      return ImageFsInfoResponse.fromPartial({
        imageFilesystems: [usage(images, now)],
        // kubelet treats a different container filesystem as a split disk; report one only then.
        containerFilesystems: containers.mountpoint !== images.mountpoint ? [usage(containers, now)] : [],
      });
    },
  };
}
