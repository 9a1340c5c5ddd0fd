import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile, readdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { silentLogger } from '../../log.js';
import { ImageStore } from '../store/store.js';
import { importArchive } from './archive.js';
import {
  buildArtifact,
  buildImage,
  file,
  writeDirectoryTar,
  writeDockerArchive,
  writeOciLayout,
} from '../../../test/helpers/image-builder.js';

const dirs: string[] = [];
after(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});
async function temp(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), 'berth-import-'));
  dirs.push(d);
  return d;
}

test('import: a gzipped docker-save archive with two tags and an untagged image', async () => {
  const work = await temp();
  const a = await buildImage({
    base: false,
    layers: [{ entries: [file('a', 'a')] }, { entries: [file('b', 'b')] }],
  });
  const b = await buildImage({ base: false, layers: [{ entries: [file('c', 'c')] }] });
  const archive = join(work, 'save.tar');
  await writeDockerArchive(archive, [
    { image: a, repoTags: ['app:1', 'registry.local:5000/team/app:1'] },
    { image: b, repoTags: [] },
  ]);
  await writeFile(`${archive}.gz`, gzipSync(await readFile(archive)));
  const store = await ImageStore.open(join(work, 'root'), silentLogger);
  const result = await importArchive(`${archive}.gz`, store, { log: silentLogger });
  assert.deepEqual(result[0].repoTags, ['docker.io/library/app:1', 'registry.local:5000/team/app:1']);
  assert.equal(result[0].id, a.configDigest);
  assert.equal(result[1].id, b.configDigest);
  assert.match(result[1].warning ?? '', /no tag/);
  const listed = await store.list();
  assert.equal(listed.length, 2);
  const record = listed.find((i) => i.id === a.configDigest)!;
  assert.deepEqual(record.repoDigests, [], 'docker save carries no registry digest');
  assert.equal(await readFile(join(store.layerDirs(record)[1], 'b'), 'utf8'), 'b');
});

test('import: an OCI layout whose ref.name is a bare tag comes in untagged with a warning', async () => {
  const work = await temp();
  const image = await buildImage({ base: false, layers: [{ entries: [file('a', 'a')] }] });
  await writeOciLayout(join(work, 'layout'), [{ tag: 'v1', image }]);
  await writeDirectoryTar(join(work, 'layout'), join(work, 'layout.tar'));
  const store = await ImageStore.open(join(work, 'root'), silentLogger);
  const [result] = await importArchive(join(work, 'layout.tar'), store, { log: silentLogger });
  assert.deepEqual(result.repoTags, []);
  assert.match(result.warning ?? '', /only the tag "v1"/);
  const [named] = await importArchive(join(work, 'layout.tar'), store, {
    log: silentLogger,
    repository: 'example.com/app',
  });
  assert.deepEqual(named.repoTags, ['example.com/app:v1']);
});

test('import: a corrupted blob in an OCI layout fails and commits nothing', async () => {
  const work = await temp();
  const image = await buildImage({ base: false, layers: [{ entries: [file('a', 'a'.repeat(1000))] }] });
  const layout = join(work, 'layout');
  await writeOciLayout(layout, [{ tag: 'example.com/x:1', image }]);
  const blob = join(layout, 'blobs', 'sha256', image.layers[0].digest.slice(7));
  const data = await readFile(blob);
  data[data.length - 5] ^= 0xff;
  await writeFile(blob, data);
  await writeDirectoryTar(layout, join(work, 'layout.tar'));
  const store = await ImageStore.open(join(work, 'root'), silentLogger);
  await assert.rejects(importArchive(join(work, 'layout.tar'), store, { log: silentLogger }), /digest/);
  assert.deepEqual(await store.list(), []);
  assert.equal(await store.hasBlob(image.layers[0].digest), false);
  assert.deepEqual(await readdir(join(work, 'root', 'images', 'ingest')), []);
});

test('import: neither layout nor docker archive is a clear INVALID_ARGUMENT', async () => {
  const work = await temp();
  const image = await buildImage({ base: false, layers: [{ entries: [file('a', 'a')] }] });
  const layout = join(work, 'layout');
  await writeOciLayout(layout, [{ tag: 'example.com/x:1', image }]);
  await rm(join(layout, 'index.json'));
  await writeDirectoryTar(layout, join(work, 'layout.tar'));
  const store = await ImageStore.open(join(work, 'root'), silentLogger);
  await assert.rejects(
    importArchive(join(work, 'layout.tar'), store, { log: silentLogger }),
    (err: Error) => {
      assert.equal((err as { code?: number }).code, 3);
      assert.match(err.message, /neither an OCI image layout .* nor a docker save archive/);
      return true;
    },
  );
});

test('import: layers larger than the stream buffers come in whole; an archive cut short stores nothing', async () => {
  const work = await temp();
  const { randomBytes } = await import('node:crypto');
  // Incompressible: several MiB of blob, so the store must slow the reader down.
  const big = randomBytes(6 * 1024 * 1024);
  const image = await buildImage({ base: false, layers: [{ entries: [file('big', big)] }] });
  const layout = join(work, 'layout');
  await writeOciLayout(layout, [{ tag: 'example.com/big:1', image }]);
  await writeDirectoryTar(layout, join(work, 'layout.tar'));
  const whole = await readFile(join(work, 'layout.tar'));

  const cutStore = await ImageStore.open(join(work, 'cut-root'), silentLogger);
  const cut = join(work, 'cut.tar');
  await writeFile(cut, whole.subarray(0, Math.floor(whole.length / 2)));
  await assert.rejects(importArchive(cut, cutStore, { log: silentLogger }), (err: Error) => {
    assert.equal((err as { code?: number }).code, 3);
    assert.match(err.message, /cannot import .*cut\.tar: .*ends in the middle of entry/);
    return true;
  });
  assert.deepEqual(await cutStore.list(), []);
  assert.equal(await cutStore.hasBlob(image.layers[0].digest), false);
  assert.deepEqual(await readdir(join(work, 'cut-root', 'images', 'ingest')), []);

  const store = await ImageStore.open(join(work, 'root'), silentLogger);
  const [result] = await importArchive(join(work, 'layout.tar'), store, { log: silentLogger });
  assert.deepEqual(result.repoTags, ['example.com/big:1']);
  const [record] = await store.list();
  assert.ok((await readFile(join(store.layerDirs(record)[0], 'big'))).equals(big));
});

test('import: an OCI layout holding an artifact brings it in as one, its titled files shown', async () => {
  const work = await temp();
  const artifact = buildArtifact(
    [{ name: 'model/weights.bin', content: 'W'.repeat(300) }, { content: 'untitled' }],
    'application/vnd.example.model.v1',
  );
  const image = await buildImage({ base: false, layers: [{ entries: [file('a', 'a')] }] });
  const layout = join(work, 'layout');
  await writeOciLayout(layout, [
    { tag: 'example.com/models/m:1', image: artifact },
    { tag: 'example.com/app:1', image },
  ]);
  await writeDirectoryTar(layout, join(work, 'layout.tar'));
  const store = await ImageStore.open(join(work, 'root'), silentLogger);
  const results = await importArchive(join(work, 'layout.tar'), store, { log: silentLogger });
  assert.deepEqual(
    results.map((r) => [r.id, r.repoTags]),
    [
      [artifact.manifestDigest, ['example.com/models/m:1']],
      [image.configDigest, ['example.com/app:1']],
    ],
  );
  const record = (await store.list()).find((r) => r.id === artifact.manifestDigest);
  assert.equal(record?.artifact?.artifactType, 'application/vnd.example.model.v1');
  assert.equal(
    await readFile(join(store.artifactFilesDir(record!), 'model', 'weights.bin'), 'utf8'),
    'W'.repeat(300),
  );

  // A layout missing one of the artifact's blobs is refused naming it, committing nothing of it.
  const broken = join(work, 'broken');
  const other = buildArtifact([{ name: 'x', content: 'lost' }], 'application/vnd.example.x');
  await writeOciLayout(broken, [{ tag: 'example.com/models/x:1', image: other }]);
  await rm(join(broken, 'blobs', 'sha256', other.layers[0].digest.slice(7)));
  await writeDirectoryTar(broken, join(work, 'broken.tar'));
  await assert.rejects(
    importArchive(join(work, 'broken.tar'), store, { log: silentLogger }),
    new RegExp(`blob ${other.layers[0].digest} of artifact ${other.manifestDigest} is missing`),
  );
  assert.equal((await store.list()).length, 2);
});

test('import: two images with one layer blob on different parents, blobs discarded: both come in whole, no layer blob is kept', async () => {
  const work = await temp();
  const shared = { entries: [file('same', 'the same bytes')] };
  const p = await buildImage({ base: false, layers: [{ entries: [file('p', 'p')] }, shared] });
  const q = await buildImage({ base: false, layers: [{ entries: [file('q', 'q')] }, shared] });
  assert.equal(p.layers[1].digest, q.layers[1].digest);
  await writeOciLayout(join(work, 'layout'), [
    { tag: 'example.com/p:1', image: p },
    { tag: 'example.com/q:1', image: q },
  ]);
  await writeDirectoryTar(join(work, 'layout'), join(work, 'layout.tar'));
  const store = await ImageStore.open(join(work, 'root'), silentLogger, { discardLayerBlobs: true });
  const result = await importArchive(join(work, 'layout.tar'), store, { log: silentLogger });
  assert.deepEqual(
    result.map((r) => r.id),
    [p.configDigest, q.configDigest],
  );
  for (const image of [p, q]) {
    const record = (await store.get(image.configDigest))!;
    assert.equal(await readFile(join(store.layerDirs(record)[1], 'same'), 'utf8'), 'the same bytes');
  }
  const blobs = await readdir(join(work, 'root', 'images', 'blobs', 'sha256'));
  for (const l of [...p.layers, ...q.layers])
    assert.ok(!blobs.includes(l.digest.slice(7)), `no blob ${l.digest}`);
  assert.ok(blobs.includes(p.configDigest.slice(7)) && blobs.includes(q.manifestDigest.slice(7)));
});
