/**
 * Unpacking a layer blob into an overlayfs lower directory (the rules are in
 * writer.ts, which runs in a layer worker thread; see ingest.ts).
 */
import type { Readable } from 'node:stream';
import { ContentMismatchError, LayerRejectedError } from './errors.js';
import { runIngest } from './ingest.js';
import type { LayerLog, UnpackOptions, UnpackResult } from './writer.js';

export { ContentMismatchError, LayerRejectedError };
export type { LayerLog, UnpackOptions, UnpackResult };

/**
 * Unpacks `source` (a layer blob stream) into `options.target` in a layer
 * worker thread, so that decompressing, hashing and writing never hold up
 * the daemon's event loop. On failure the target holds partial content:
 * callers unpack into a temp dir and remove it.
 */
export async function unpackLayerStream(
  source: Readable,
  options: UnpackOptions & { signal?: AbortSignal },
): Promise<UnpackResult> {
  const { signal, log, ...unpack } = options;
  const result = await runIngest({ unpack }, source, { signal, log });
  return result.unpack!;
}
