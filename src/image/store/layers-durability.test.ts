/**
 * What a power loss right after a layer was committed leaves on the disk
 * (test/helpers/power-loss.ts: a loop-mounted ext4 and a copy of its device).
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createHash } from 'node:crypto';
import { mkdir, readFile, rename } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { buildLayer, dir, file, type BuiltLayer } from '../../../test/helpers/image-builder.js';
import { LoopFilesystem } from '../../../test/helpers/power-loss.js';
import { silentLogger } from '../../log.js';
import { stopLayerWorkers } from '../layer/ingest.js';
import { fsyncDir } from '../../util/atomic-file.js';
import { digestHex } from './blobs.js';
import { chainIdOf, LayerStore, type LayerBlob } from './layers.js';

let disk: LoopFilesystem;

before(async () => {
  disk = await LoopFilesystem.create();
});

after(async () => {
  await stopLayerWorkers();
  await disk?.close();
});

/** A layer of a few files large enough to live in data blocks, in a nested directory too. */
async function sampleLayer(): Promise<{ layer: BuiltLayer; files: Map<string, Buffer> }> {
  const files = new Map<string, Buffer>([
    ['bin/tool', randomBytes(300_000)],
    ['etc/config', Buffer.from('setting = 1\n'.repeat(2000))],
    ['usr/lib/deep/library.so', randomBytes(150_000)],
  ]);
  const layer = await buildLayer({
    entries: [
      dir('bin'),
      dir('etc'),
      dir('usr'),
      dir('usr/lib'),
      dir('usr/lib/deep'),
      ...[...files].map(([path, data]) => file(path, data)),
    ],
  });
  return { layer, files };
}

async function unpackInto(
  storeDir: string,
  syncLayers: boolean,
  layer: BuiltLayer,
  blob?: LayerBlob,
): Promise<string> {
  const store = new LayerStore(storeDir, silentLogger, { syncLayers });
  await store.init();
  const chainId = chainIdOf(undefined, layer.diffId);
  await store.unpack(
    { blobDigest: layer.digest, mediaType: layer.mediaType, size: layer.size, diffId: layer.diffId },
    chainId,
    () => Readable.from([layer.data]),
    { blob },
  );
  return join(digestHex(chainId), 'diff');
}

/**
 * A blob stored from the layer's bytes and committed as the image store does
 * (rename, fsync of the dir); at the instant it is committed, the disk is
 * copied as a power loss would leave it.
 */
async function blobBeside(
  storeDir: string,
  layer: BuiltLayer,
): Promise<{ blob: LayerBlob; path: string; crashedAtCommit: () => string }> {
  const dir = join(storeDir, 'blobs');
  await mkdir(join(dir, 'ingest'), { recursive: true });
  const temp = join(dir, 'ingest', 'blob.tmp');
  const path = join(dir, digestHex(layer.digest));
  let crashed: string | undefined;
  return {
    path,
    blob: {
      spec: { temp, digest: layer.digest, size: layer.size },
      commit: async () => {
        await rename(temp, path);
        await fsyncDir(dir);
        crashed = await disk.afterPowerLoss();
      },
    },
    crashedAtCommit: () => {
      assert.ok(crashed, 'the blob was never committed');
      return crashed;
    },
  };
}

async function readOrEmpty(path: string): Promise<Buffer> {
  try {
    return await readFile(path);
  } catch {
    return Buffer.alloc(0);
  }
}

test(
  'a committed layer survives a power loss whole (syncfs before the rename)',
  { timeout: 120_000 },
  async (t) => {
    const durable = await sampleLayer();
    const control = await sampleLayer();
    const expiry = Number((await readFile('/proc/sys/vm/dirty_expire_centisecs', 'utf8')).trim()) * 10;
    const started = Date.now();
    const durableDiff = await unpackInto(join(disk.mountPoint, 'synced'), true, durable.layer);
    // The control comes second: the first store's syncfs would flush it too.
    const controlDiff = await unpackInto(join(disk.mountPoint, 'unsynced'), false, control.layer);
    const crashed = await disk.afterPowerLoss();
    const elapsed = Date.now() - started;

    for (const [path, data] of durable.files) {
      const back = await readOrEmpty(join(crashed, 'synced', durableDiff, path));
      assert.ok(
        back.equals(data),
        `${path}: ${back.length} of ${data.length} bytes on the disk after the power loss`,
      );
    }

    // The control shows the test can tell: without the flush the layer directory is there
    // (its rename was made durable) but its files are still only in the page cache.
    // Only meaningful while the kernel's writeback has not yet reached them.
    if (elapsed >= expiry / 2) {
      t.diagnostic(`control not judged: ${elapsed} ms elapsed, dirty pages expire after ${expiry} ms`);
      return;
    }
    const sizes = await Promise.all(
      [...control.files.keys()].map(
        async (path) => (await readOrEmpty(join(crashed, 'unsynced', controlDiff, path))).length,
      ),
    );
    const whole = [...control.files.values()].map((data) => data.length);
    assert.notDeepEqual(sizes, whole, 'without syncfs the layer should not have reached the disk yet');
  },
);

test(
  'a layer blob is on the disk whole by the time it is committed, with and without syncfs',
  { timeout: 120_000 },
  async () => {
    // With syncfs the blob has no fsync of its own: the layer's flush must come before its commit.
    for (const syncLayers of [true, false]) {
      const { layer } = await sampleLayer();
      const storeDir = join(disk.mountPoint, `blob-${syncLayers ? 'synced' : 'unsynced'}`);
      const stored = await blobBeside(storeDir, layer);
      await unpackInto(join(storeDir, 'layers'), syncLayers, layer, stored.blob);
      const back = await readOrEmpty(
        join(stored.crashedAtCommit(), stored.path.slice(disk.mountPoint.length)),
      );
      const digest = `sha256:${createHash('sha256').update(back).digest('hex')}`;
      assert.equal(
        digest,
        layer.digest,
        `syncLayers ${syncLayers}: ${back.length} of ${layer.size} bytes on the disk when the blob was committed`,
      );
    }
  },
);
