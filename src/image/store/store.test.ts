import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fsPromises, { mkdir, mkdtemp, readdir, rm, writeFile, readFile, utimes } from 'node:fs/promises';
import type { PathLike } from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { status } from '@grpc/grpc-js';
import { silentLogger } from '../../log.js';
import { runChecked } from '../../util/run.js';
import { loadConfig } from '../../config/load.js';
import { ImageManager } from '../manager.js';
import { ImageStore } from './store.js';
import { ContentMismatchError, LayerRejectedError } from '../layer/unpack.js';
import {
  buildImage,
  buildLayer,
  file,
  symlink,
  dir,
  type BuiltImage,
} from '../../../test/helpers/image-builder.js';
import type { ImageCommit } from '../types.js';

const dirs: string[] = [];
after(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});
async function tempRoot(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), 'berth-store-'));
  dirs.push(d);
  return d;
}

/** A pid that belonged to a process that has exited. */
async function deadPid(): Promise<number> {
  const child = spawn('/bin/true');
  await new Promise((resolve) => child.once('exit', resolve));
  return child.pid!;
}

async function putImage(store: ImageStore, image: BuiltImage): Promise<void> {
  await store.putBlob(image.configDigest, image.config.length, Readable.from([image.config]));
  for (const l of image.layers) await store.putBlob(l.digest, l.size, Readable.from([l.data]));
}

function commitOf(image: BuiltImage, tag?: string, repository?: string): ImageCommit {
  return {
    configDigest: image.configDigest,
    manifestDigest: image.manifestDigest,
    manifestMediaType: image.mediaType,
    manifest: image.manifest,
    layers: image.layers.map((l) => ({
      blobDigest: l.digest,
      mediaType: l.mediaType,
      size: l.size,
      diffId: l.diffId,
    })),
    tag,
    repository,
  };
}

test('putBlob: a digest or size mismatch stores nothing', async () => {
  const root = await tempRoot();
  const store = await ImageStore.open(root, silentLogger);
  const data = Buffer.from('hello blob');
  const wrong = `sha256:${'1'.repeat(64)}`;
  await assert.rejects(store.putBlob(wrong, data.length, Readable.from([data])), ContentMismatchError);
  const right = (await buildLayer({ entries: [file('x', 'x')] })).digest;
  await assert.rejects(store.putBlob(right, 3, Readable.from([data])), ContentMismatchError);
  await assert.rejects(store.putBlob(right, 1000, Readable.from([data])), ContentMismatchError);
  assert.equal(await store.hasBlob(wrong), false);
  assert.equal(await store.hasBlob(right), false);
  assert.deepEqual(await readdir(join(root, 'images', 'ingest')), []);
  assert.deepEqual(await readdir(join(root, 'images', 'blobs', 'sha256')), []);
});

test('unpackLayer: two requests for the same layer share one unpack', async () => {
  const root = await tempRoot();
  const store = await ImageStore.open(root, silentLogger);
  const layer = await buildLayer({ entries: [dir('d'), file('d/f', 'content')], compression: 'gzip' });
  await store.putBlob(layer.digest, layer.size, Readable.from([layer.data]));
  const rec = {
    blobDigest: layer.digest,
    mediaType: layer.mediaType,
    size: layer.size,
    diffId: layer.diffId,
  };
  const [a, b, c] = await Promise.all([
    store.unpackLayer(rec, undefined),
    store.unpackLayer(rec, undefined),
    store.unpackLayer(rec, undefined),
  ]);
  assert.equal(a, b);
  assert.equal(b, c);
  assert.equal(await readFile(join(a, 'd/f'), 'utf8'), 'content');
  const entries = await readdir(join(root, 'images', 'layers'));
  assert.deepEqual(entries, [layer.diffId.slice(7)], 'one layer dir, no temp dirs');
  // A second store (another process would do the same) finds it done.
  const again = await ImageStore.open(root, silentLogger);
  assert.equal(await again.unpackLayer(rec, undefined), a);
});

test('unpackLayer: an escaping layer is rejected and leaves nothing behind', async () => {
  const root = await tempRoot();
  const store = await ImageStore.open(root, silentLogger);
  const layer = await buildLayer({
    entries: [file('ok', 'x'), symlink('esc', '/etc'), file('esc/evil', 'x')],
  });
  await store.putBlob(layer.digest, layer.size, Readable.from([layer.data]));
  await assert.rejects(
    store.unpackLayer(
      { blobDigest: layer.digest, mediaType: layer.mediaType, size: layer.size, diffId: layer.diffId },
      undefined,
    ),
    LayerRejectedError,
  );
  assert.deepEqual(await readdir(join(root, 'images', 'layers')), []);
});

/** What a failed pull must not leave: blobs, layers, temp files or dirs. */
async function assertNothingStored(root: string): Promise<void> {
  assert.deepEqual(await readdir(join(root, 'images', 'ingest')), [], 'no blob temp files');
  assert.deepEqual(await readdir(join(root, 'images', 'blobs', 'sha256')), [], 'no blobs');
  assert.deepEqual(await readdir(join(root, 'images', 'layers')), [], 'no layers or temp dirs');
}

async function bigLayer() {
  // Random (incompressible) content: several MiB of compressed stream.
  const { randomBytes } = await import('node:crypto');
  const entries = Array.from({ length: 8 }, (_, i) =>
    file(`f${i}`, randomBytes(1024 * 1024).toString('base64')),
  );
  const layer = await buildLayer({ entries, compression: 'gzip' });
  const rec = {
    blobDigest: layer.digest,
    mediaType: layer.mediaType,
    size: layer.size,
    diffId: layer.diffId,
  };
  return { layer, rec };
}

function chunksOf(data: Buffer, size: number): Buffer[] {
  const out: Buffer[] = [];
  for (let off = 0; off < data.length; off += size) out.push(data.subarray(off, off + size));
  return out;
}

test('pullLayer: stores the blob and unpacks the layer from the same bytes', async () => {
  const root = await tempRoot();
  const store = await ImageStore.open(root, silentLogger);
  const { layer, rec } = await bigLayer();
  let seen = 0;
  await store.pullLayer(rec, undefined, layer.size, Readable.from(chunksOf(layer.data, 64 * 1024)), {
    onBytes: (n) => (seen += n),
  });
  assert.equal(seen, layer.size);
  assert.equal(await store.hasBlob(layer.digest), true);
  assert.equal(
    (await readFile(join(root, 'images', 'blobs', 'sha256', layer.digest.slice(7)))).equals(layer.data),
    true,
  );
  assert.deepEqual(await readdir(join(root, 'images', 'layers')), [layer.diffId.slice(7)]);
  assert.deepEqual(await readdir(join(root, 'images', 'ingest')), []);
});

test('pullLayer: a corrupted, short or other blob is DATA_LOSS naming the blob, and leaves nothing, whether blobs are kept or not', async () => {
  const { layer, rec } = await bigLayer();
  const corrupt = Buffer.from(layer.data);
  corrupt[corrupt.length - 100] ^= 0xff;
  // Other bytes that unpack to the same layer are not the blob the manifest names.
  const { gzipSync } = await import('node:zlib');
  const recompressed = gzipSync(layer.tar, { level: 1 });
  for (const discardLayerBlobs of [false, true]) {
    const root = await tempRoot();
    const store = await ImageStore.open(root, silentLogger, { discardLayerBlobs });
    for (const [size, body] of [
      [layer.size, chunksOf(corrupt, 64 * 1024)],
      [layer.size, chunksOf(layer.data.subarray(0, 5000), 1000)],
      [recompressed.length, chunksOf(recompressed, 64 * 1024)],
    ] as const) {
      await assert.rejects(
        store.pullLayer(rec, undefined, size, Readable.from(body)),
        (err: Error) => err instanceof ContentMismatchError && err.message.includes(`blob ${layer.digest}`),
      );
      await assertNothingStored(root);
    }
    assert.equal(await store.hasLayerSource(rec, undefined), false);
  }
});

test('pullLayer: cancelled mid-stream, it fails with the reason once the worker stopped, leaving nothing', async () => {
  const root = await tempRoot();
  const store = await ImageStore.open(root, silentLogger);
  const { layer, rec } = await bigLayer();
  const controller = new AbortController();
  const reason = new Error('test cancel');
  const chunks = chunksOf(layer.data, 64 * 1024);
  const body = Readable.from(
    (async function* () {
      for (const [i, c] of chunks.entries()) {
        if (i === Math.floor(chunks.length / 2)) {
          controller.abort(reason);
          // A stalled network: nothing more comes.
          await new Promise(() => undefined);
        }
        yield c;
      }
    })(),
  );
  await assert.rejects(
    store.pullLayer(rec, undefined, layer.size, body, { signal: controller.signal }),
    (err) => err === reason,
  );
  assert.equal(body.destroyed, true, 'the body (connection) is closed');
  await assertNothingStored(root);
  // Nothing appears later either (the worker had stopped writing).
  await new Promise((r) => setTimeout(r, 200));
  await assertNothingStored(root);
});

test('pullLayer: a body that errors is UNAVAILABLE naming the layer, and leaves nothing', async () => {
  const root = await tempRoot();
  const store = await ImageStore.open(root, silentLogger);
  const { layer, rec } = await bigLayer();
  const chunks = chunksOf(layer.data, 64 * 1024);
  const body = Readable.from(
    (async function* () {
      yield* chunks.slice(0, 10);
      throw new Error('connection reset');
    })(),
  );
  await assert.rejects(
    store.pullLayer(rec, undefined, layer.size, body),
    (err: Error & { code?: number }) =>
      err.code === status.UNAVAILABLE &&
      err.message.includes(layer.digest) &&
      err.message.includes('connection reset'),
  );
  await assertNothingStored(root);
});

test('commitImage: a layer whose content does not match its diff ID commits nothing', async () => {
  const root = await tempRoot();
  const store = await ImageStore.open(root, silentLogger);
  const image = await buildImage({ base: false, layers: [{ entries: [file('a', 'a')] }] });
  await putImage(store, image);
  const commit = commitOf(image, 'example.com/x:1');
  commit.layers[0] = { ...commit.layers[0], diffId: `sha256:${'2'.repeat(64)}` };
  await assert.rejects(
    store.commitImage(commit),
    (err: { code: number }) => err.code === status.INVALID_ARGUMENT,
  );
  assert.deepEqual(await store.list(), []);
});

test('crash safety: start-up removes what a killed process left and keeps the index whole', async () => {
  const root = await tempRoot();
  const store = await ImageStore.open(root, silentLogger);
  const complete = await buildImage({
    base: false,
    layers: [{ entries: [file('a', 'a')] }, { entries: [file('b', 'b')] }],
  });
  await putImage(store, complete);
  await store.commitImage(commitOf(complete, 'example.com/complete:1', 'example.com/complete'));
  // A second image whose pull was killed after its blobs, before its commit.
  const partial = await buildImage({ base: false, layers: [{ entries: [file('p', 'p')] }] });
  await putImage(store, partial);
  // Debris of a killed process: a half ingest, a half unpack, a half index write.
  const pid = await deadPid();
  const images = join(root, 'images');
  await writeFile(join(images, 'ingest', `${'3'.repeat(64)}.${pid}.abcdef.tmp`), 'half a blob');
  await mkdir(join(images, 'layers', `.${'4'.repeat(16)}.${pid}.abcdef.tmp`, 'diff', 'usr'), {
    recursive: true,
  });
  await writeFile(join(images, '.index.json.123456.tmp'), '{"version":1,"images":[{"id":"tor');
  // A layer directory lost (e.g. removed by hand): restored from its blob.
  const lostLayer = store.layerDirs((await store.list())[0])[1];
  await rm(join(lostLayer, '..'), { recursive: true });

  const reopened = await ImageStore.open(root, silentLogger);
  const listed = await reopened.list();
  assert.deepEqual(
    listed.map((i) => i.id),
    [complete.configDigest],
    'only the committed image is visible',
  );
  assert.deepEqual(await readdir(join(images, 'ingest')), []);
  assert.ok(!(await readdir(join(images, 'layers'))).some((n) => n.startsWith('.')));
  assert.ok(!(await readdir(images)).some((n) => n.endsWith('.tmp')));
  assert.equal(await readFile(join(lostLayer, 'b'), 'utf8'), 'b', 'the lost layer was unpacked again');
  // The interrupted pull finishes: blobs are there, only the commit was missing.
  assert.equal(await reopened.hasBlob(partial.layers[0].digest), true);
  const record = await reopened.commitImage(commitOf(partial, 'example.com/partial:1'));
  assert.equal(record.id, partial.configDigest);
});

test('crash safety: an image whose config, or a lost layer and its blob, are gone is dropped at start-up; one missing only a layer blob stays', async () => {
  const root = await tempRoot();
  const store = await ImageStore.open(root, silentLogger);
  const images = await Promise.all(
    ['config', 'layer', 'blob'].map((name) =>
      buildImage({ base: false, layers: [{ entries: [file(name, name)] }] }),
    ),
  );
  for (const image of images) {
    await putImage(store, image);
    await store.commitImage(commitOf(image));
  }
  const [noConfig, noLayer, noBlob] = images;
  await rm(store.blobs.path(noConfig.configDigest));
  await rm(join(store.layerDirs((await store.get(noLayer.configDigest))!)[0], '..'), { recursive: true });
  await rm(store.blobs.path(noLayer.layers[0].digest));
  // As after the option to discard layer blobs was on and then turned off.
  await rm(store.blobs.path(noBlob.layers[0].digest));
  const reopened = await ImageStore.open(root, silentLogger);
  assert.deepEqual(
    (await reopened.list()).map((i) => i.id),
    [noBlob.configDigest],
  );
  // Pulled again, the layer's blob is kept again.
  const layer = commitOf(noBlob).layers[0];
  assert.equal(await reopened.hasLayerSource(layer, undefined), false);
  await reopened.pullLayer(layer, undefined, layer.size, Readable.from([noBlob.layers[0].data]));
  assert.equal(await reopened.hasBlob(layer.blobDigest), true);
});

test('discarding layer blobs: a pulled layer is verified and unpacked, its blob not kept', async () => {
  const root = await tempRoot();
  const store = await ImageStore.open(root, silentLogger, { discardLayerBlobs: true });
  const { layer, rec } = await bigLayer();
  await store.pullLayer(rec, undefined, layer.size, Readable.from(chunksOf(layer.data, 64 * 1024)));
  assert.deepEqual(await readdir(join(root, 'images', 'layers')), [layer.diffId.slice(7)]);
  assert.deepEqual(await readdir(join(root, 'images', 'blobs', 'sha256')), [], 'the blob is not kept');
  assert.deepEqual(await readdir(join(root, 'images', 'ingest')), []);
  assert.equal(await store.hasLayerSource(rec, undefined), true, 'the unpacked layer need not be fetched');
  assert.equal((await store.unpackLayer(rec, undefined)).startsWith(join(root, 'images', 'layers')), true);
  // A store that keeps blobs wants the blob itself.
  const keeping = await ImageStore.open(root, silentLogger);
  assert.equal(await keeping.hasLayerSource(rec, undefined), false);
});

test('discarding layer blobs: blobs kept before go at start-up, those of an import once it has committed; config and manifest stay', async () => {
  const root = await tempRoot();
  const blobsDir = join(root, 'images', 'blobs', 'sha256');
  const keeping = await ImageStore.open(root, silentLogger);
  const old = await buildImage({
    base: false,
    layers: [{ entries: [file('a', 'a')] }, { entries: [file('b', 'b')] }],
  });
  await putImage(keeping, old);
  await keeping.commitImage(commitOf(old, 'example.com/old:1'));
  assert.equal((await readdir(blobsDir)).length, 4, 'kept: config, manifest, two layers');

  const store = await ImageStore.open(root, silentLogger, { discardLayerBlobs: true });
  const hexes = (digests: string[]) => digests.map((d) => d.slice(7)).sort();
  assert.deepEqual((await readdir(blobsDir)).sort(), hexes([old.configDigest, old.manifestDigest]));
  const [listed] = await store.list();
  assert.equal(listed.id, old.configDigest);
  assert.equal(await readFile(join(store.layerDirs(listed)[1], 'b'), 'utf8'), 'b');

  // An import stores blobs, then unpacks them; once it has committed all, the layer blobs go.
  const imported = await buildImage({ base: false, layers: [{ entries: [file('c', 'c')] }] });
  await putImage(store, imported);
  assert.equal(await store.hasBlob(imported.layers[0].digest), true);
  await store.commitImage(commitOf(imported, 'example.com/imported:1'));
  assert.equal(await store.blobs.has(imported.layers[0].digest), true, 'kept until the import is done');
  await store.releaseLayerBlobs([imported.configDigest, imported.manifestDigest, imported.layers[0].digest]);
  assert.deepEqual(
    (await readdir(blobsDir)).sort(),
    hexes([old.configDigest, old.manifestDigest, imported.configDigest, imported.manifestDigest]),
  );
  // Removing an image whose layer blobs are gone removes the rest.
  assert.equal(await store.deleteImage(old.configDigest), true);
  assert.deepEqual((await readdir(blobsDir)).sort(), hexes([imported.configDigest, imported.manifestDigest]));
  assert.deepEqual(await readdir(join(root, 'images', 'layers')), [imported.layers[0].diffId.slice(7)]);
});

test('discarding layer blobs: a lost layer directory drops its image at start-up (nothing to unpack it from)', async () => {
  const root = await tempRoot();
  const store = await ImageStore.open(root, silentLogger, { discardLayerBlobs: true });
  const lost = await buildImage({ base: false, layers: [{ entries: [file('l', 'l')] }] });
  const kept = await buildImage({ base: false, layers: [{ entries: [file('k', 'k')] }] });
  for (const image of [lost, kept]) {
    await putImage(store, image);
    await store.commitImage(commitOf(image, `example.com/${image === lost ? 'lost' : 'kept'}:1`));
  }
  await store.releaseLayerBlobs([lost, kept].map((image) => image.layers[0].digest));
  const record = await store.get(lost.configDigest);
  await rm(join(store.layerDirs(record!)[0], '..'), { recursive: true });
  const reopened = await ImageStore.open(root, silentLogger, { discardLayerBlobs: true });
  assert.deepEqual(
    (await reopened.list()).map((i) => i.id),
    [kept.configDigest],
  );
});

test('tags move between images; the index reloads when another process changes it', async () => {
  const root = await tempRoot();
  const a = await ImageStore.open(root, silentLogger);
  const b = await ImageStore.open(root, silentLogger);
  const one = await buildImage({ base: false, layers: [{ entries: [file('1', '1')] }] });
  const two = await buildImage({ base: false, layers: [{ entries: [file('2', '2')] }] });
  await putImage(a, one);
  await putImage(a, two);
  await a.commitImage(commitOf(one, 'example.com/app:latest'));
  assert.deepEqual(
    (await b.list()).map((i) => i.repoTags),
    [['example.com/app:latest']],
  );
  await b.commitImage(commitOf(two, 'example.com/app:latest'));
  const seen = new Map((await a.list()).map((i) => [i.id, i.repoTags]));
  assert.deepEqual(seen.get(one.configDigest), []);
  assert.deepEqual(
    (await a.get(one.configDigest))?.repoDigests,
    [`example.com/app@${one.manifestDigest}`],
    'the untagged image keeps its previous name as repo@digest',
  );
  assert.deepEqual(seen.get(two.configDigest), ['example.com/app:latest']);
});

test('manager: RemoveImage refuses an image a container uses, naming it; pinned images report pinned', async () => {
  const root = await tempRoot();
  const cfgFile = join(root, 'berth.toml');
  await writeFile(cfgFile, `root = "${root}"\n[image]\npinned_images = ["example.com/pinned:1"]\n`);
  const { config } = await loadConfig({ file: cfgFile });
  const manager = await ImageManager.open(() => config, silentLogger);
  const image = await buildImage({ base: false, layers: [{ entries: [file('a', 'a')] }] });
  await putImage(manager.store, image);
  await manager.store.commitImage(commitOf(image, 'example.com/pinned:1', 'example.com/pinned'));
  const record = (await manager.resolve('example.com/pinned:1'))!.record;
  assert.equal(await manager.isPinned(record), true);
  manager.setInUseChecker((id) => (id === image.configDigest ? 'web-1 (c0ffee)' : undefined));
  await assert.rejects(manager.remove('example.com/pinned:1'), (err: { code: number; message: string }) => {
    assert.equal(err.code, status.FAILED_PRECONDITION);
    assert.match(err.message, /in use by container web-1 \(c0ffee\)/);
    return true;
  });
  manager.setInUseChecker(() => undefined);
  await manager.remove(`example.com/pinned@${image.manifestDigest}`);
  assert.equal(await manager.resolve(image.configDigest), undefined);
  assert.deepEqual(await readdir(join(root, 'images', 'layers')), []);
  assert.deepEqual(await readdir(join(root, 'images', 'blobs', 'sha256')), []);
});

test('start-up removes unreferenced blobs and layers older than a day, keeps fresh ones and mounted ones', async () => {
  const root = await tempRoot();
  const store = await ImageStore.open(root, silentLogger);
  const oldLayer = await buildLayer({ entries: [file('old', 'o')] });
  const freshLayer = await buildLayer({ entries: [file('fresh', 'f')] });
  const mountedLayer = await buildLayer({ entries: [file('mounted', 'm')] });
  for (const l of [oldLayer, freshLayer, mountedLayer]) {
    await store.putBlob(l.digest, l.size, Readable.from([l.data]));
    await store.unpackLayer(
      { blobDigest: l.digest, mediaType: l.mediaType, size: l.size, diffId: l.diffId },
      undefined,
    );
  }
  const twoDaysAgo = new Date(Date.now() - 2 * 24 * 3600 * 1000);
  for (const l of [oldLayer, mountedLayer]) {
    await utimes(store.blobs.path(l.digest), twoDaysAgo, twoDaysAgo);
    await utimes(join(root, 'images', 'layers', l.diffId.slice(7)), twoDaysAgo, twoDaysAgo);
  }
  // As a container's overlay would hold it (a read-only overlay of the one layer).
  const target = join(root, 'rootfs');
  await mkdir(target);
  const empty = join(root, 'empty');
  await mkdir(empty);
  const lower = store.layers.diffDir(mountedLayer.diffId);
  await runChecked('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${lower}:${empty}`, target]);
  try {
    const reopened = await ImageStore.open(root, silentLogger);
    assert.equal(await reopened.hasBlob(oldLayer.digest), false);
    assert.equal(await reopened.layers.has(oldLayer.diffId), false);
    assert.equal(await reopened.hasBlob(freshLayer.digest), true);
    assert.equal(await reopened.layers.has(freshLayer.diffId), true);
    assert.equal(await reopened.layers.has(mountedLayer.diffId), true, 'a mounted layer stays');
    assert.equal(await readFile(join(target, 'mounted'), 'utf8'), 'm');
  } finally {
    await runChecked('umount', [target]);
  }
});

test("a second process's commit and removal show in this store without a stat per query", async () => {
  const root = await tempRoot();
  const here = await ImageStore.open(root, silentLogger);
  const other = await ImageStore.open(root, silentLogger); // an import CLI beside the daemon
  const image = await buildImage({ base: false, layers: [{ entries: [file('w', 'watched')] }] });
  const seen = async (want: boolean) => {
    const deadline = Date.now() + 5000;
    while (Date.now() < deadline) {
      if ((await here.list()).some((r) => r.id === image.configDigest) === want) return;
      await new Promise((r) => setTimeout(r, 10));
    }
    assert.fail(`the other store's ${want ? 'commit' : 'removal'} never showed`);
  };
  await here.list();

  // Queries between changes look at the index file no more (ListImages, ImageStatus,
  // image lookups; each stat would wait for a thread-pool thread).
  const indexStats = { count: 0 };
  const original = fsPromises.stat;
  fsPromises.stat = ((path: PathLike, ...rest: unknown[]) => {
    if (String(path).endsWith('index.json')) indexStats.count++;
    return (original as (...a: unknown[]) => unknown)(path, ...rest);
  }) as typeof fsPromises.stat;
  syncBuiltinESMExports();
  try {
    for (let i = 0; i < 50; i++) await here.list();
    assert.equal(indexStats.count, 0, `${indexStats.count} stats of the index for 50 queries`);
  } finally {
    fsPromises.stat = original;
    syncBuiltinESMExports();
  }

  await putImage(other, image);
  await other.commitImage(commitOf(image, 'example.com/watched:1'));
  await seen(true);
  await other.deleteImage(image.configDigest);
  await seen(false);
});
