/** The process of a container: argv from config and image, env, stop signal. */
import { Signal, signalToJSON } from '../../generated/api.js';
import type { ImageConfigFile } from '../../image/types.js';

/**
 * Stop signal name: the config's, else the image's StopSignal (name or number),
 * else SIGTERM.
 */
export function stopSignalOf(config: Signal, image: ImageConfigFile): string {
  if (config !== Signal.RUNTIME_DEFAULT && config !== Signal.UNRECOGNIZED) return signalToJSON(config);
  return image.config?.StopSignal || 'SIGTERM';
}
