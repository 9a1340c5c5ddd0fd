/**
 * The infra container's root filesystem and command: the built-in catatonit
 * pause, or runtime.pause_image (already in the store; pinned so image GC and
 * RemoveImage leave it alone).
 */
import type { BerthConfig } from '../../config/schema.js';
import { errorMessage, FailedPreconditionError } from '../../errors.js';
import type { ImageManager } from '../../image/manager.js';
import { BUILTIN_PAUSE_ARGS } from './builtin.js';

export { ensureBuiltinPause } from './builtin.js';

export interface PauseRootfs {
  /** 'builtin' or the image reference. */
  image: string;
  /** Image ID when from an image. */
  imageId?: string;
  /**
   * Lower dirs, highest first: the built-in rootfs (used as the root as it
   * is), or an image's layers (an overlay per pod).
   */
  lowerDirs: string[];
  args: string[];
  env: string[];
  cwd: string;
}

/**
 * `pull` fetches runtime.pause_image when the store lacks it: kubelet never
 * pulls the sandbox image itself (CRI-O and containerd pull it on demand too).
 */
export async function resolvePause(
  config: BerthConfig,
  images: ImageManager,
  builtinRootfs: () => Promise<string>,
  pull: (ref: string) => Promise<unknown>,
): Promise<PauseRootfs> {
  const ref = config.runtime.pause_image;
  if (ref === '') {
    const command = config.runtime.pause_command;
    return {
      image: 'builtin',
      lowerDirs: [await builtinRootfs()],
      args: command.length > 0 ? command : BUILTIN_PAUSE_ARGS,
      env: [],
      cwd: '/',
    };
  }
  images.pin(ref);
  let found = await images.resolve(ref);
  if (!found) {
    try {
      await pull(ref);
    } catch (err) {
      throw new FailedPreconditionError(
        `pause image ${JSON.stringify(ref)} (runtime.pause_image) is not in the image store and pulling it failed: ${errorMessage(err)}`,
        { cause: err },
      );
    }
    found = await images.resolve(ref);
    if (!found) {
      throw new FailedPreconditionError(`pause image ${JSON.stringify(ref)} was pulled but cannot be found`);
    }
  }
  const { record } = found;
  images.requireRunnable(record, ref, 'pause image (runtime.pause_image)');
  const imageConfig = record.config.config ?? {};
  const args =
    config.runtime.pause_command.length > 0
      ? config.runtime.pause_command
      : [...(imageConfig.Entrypoint ?? []), ...(imageConfig.Cmd ?? [])];
  if (args.length === 0) {
    throw new FailedPreconditionError(
      `pause image ${JSON.stringify(ref)} has no entrypoint or command; set runtime.pause_command`,
    );
  }
  const lowerDirs = images.layerDirs(record).slice().reverse();
  if (lowerDirs.length === 0) {
    throw new FailedPreconditionError(`pause image ${JSON.stringify(ref)} has no layers`);
  }
  return {
    image: ref,
    imageId: record.id,
    lowerDirs,
    args,
    env: imageConfig.Env ?? ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'],
    cwd: imageConfig.WorkingDir || '/',
  };
}
