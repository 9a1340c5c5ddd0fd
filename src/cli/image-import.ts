import { resolve } from 'node:path';
import { stat } from 'node:fs/promises';
import { loadConfig } from '../config/load.js';
import { BerthError } from '../errors.js';
import { createLogger } from '../log.js';
import { importArchive } from '../image/import/archive.js';
import { ImageStore } from '../image/store/store.js';
import { socketInUse } from '../server/socket.js';
import type { ParsedArgs } from './args.js';
import { UsageError } from './args.js';

/**
 * `berth image import FILE`: loads an OCI image-layout tarball or a
 * `docker save` archive into the image store under `root`.
 *
 * The store is built to be shared by processes (lock-protected index,
 * rename-only blobs and layers, readers that reload a changed index), so the
 * CLI writes into it itself whether or not the daemon runs: a running daemon
 * sees the image on its next call, without a private admin endpoint (the CRI
 * has no import RPC) and without streaming the archive through a socket.
 */
export async function importImageCommand(args: ParsedArgs): Promise<void> {
  const file = args.positional[0];
  if (!file) throw new UsageError('image import needs a FILE');
  if (args.positional.length > 1) throw new UsageError('image import takes one FILE');
  const path = resolve(file);
  const info = await stat(path).catch(() => undefined);
  if (!info?.isFile()) throw new Error(`cannot import ${file}: not a readable file`);
  const { config } = await loadConfig({
    file: args.options.config as string | undefined,
    flags: args.configFlags,
  });
  // Progress and warnings on stderr; stdout carries one line per image.
  const log = createLogger(
    config.log_level === 'debug' || config.log_level === 'trace' ? config.log_level : 'warn',
  );
  const daemonRunning = await socketInUse(config.server.socket);
  const store = await ImageStore.open(config.root, log, {
    sweepOrphans: !daemonRunning,
    syncLayers: config.image.sync_layers,
    discardLayerBlobs: config.image.discard_unpacked_layers,
  });
  let images;
  try {
    images = await importArchive(path, store, { log });
  } catch (err) {
    // berth's own errors already say what and why: no stack trace for them.
    if (err instanceof BerthError) {
      log.flush();
      process.stderr.write(`berth: ${err.message}\n`);
      process.exit(1);
    }
    throw err;
  }
  for (const image of images) {
    const names = image.repoTags.length > 0 ? image.repoTags.join(', ') : '<untagged>';
    process.stdout.write(`imported ${names} ${image.id}\n`);
    if (image.warning) process.stderr.write(`berth: ${image.id}: ${image.warning}\n`);
  }
  process.stderr.write(
    daemonRunning
      ? `berth: the running daemon on ${config.server.socket} sees the imported images now\n`
      : `berth: imported into ${config.root}; berth serves them when it starts\n`,
  );
  log.flush();
}
