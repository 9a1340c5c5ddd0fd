import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, readdir, rm, stat, utimes } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { silentLogger } from '../../log.js';
import { sha256 } from '../../../test/helpers/image-builder.js';
import type { ArtifactCommit, ArtifactFile } from '../types.js';
import { artifactFileName, artifactNamesProblem } from './artifacts.js';
import { ImageStore } from './store.js';

const dirs: string[] = [];
after(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});
async function tempRoot(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), 'berth-artifacts-'));
  dirs.push(d);
  return d;
}

const named = (name: string, i = 0): ArtifactFile => ({
  blobDigest: `sha256:${String(i).padStart(64, '0')}`,
  mediaType: 'application/octet-stream',
  size: 1,
  name,
});

test('artifact file names: from the title (or a model file path); a tree without escapes or clashes', () => {
  assert.equal(artifactFileName({ 'org.opencontainers.image.title': 'a.txt' }), 'a.txt');
  assert.equal(artifactFileName({ 'org.cncf.model.filepath': 'w/model.bin' }), 'w/model.bin');
  assert.equal(artifactFileName({ 'org.opencontainers.image.created': 'x' }), '');
  assert.equal(artifactFileName(undefined), '');
  assert.equal(artifactNamesProblem([named('a'), named('d/b', 1), named('d/c', 2), named('', 3)]), undefined);
  for (const bad of ['/etc/passwd', '../up', 'd/../../up', 'd//b', 'd/./b', 'trailing/', '.']) {
    assert.match(
      artifactNamesProblem([named(bad)]) ?? '',
      /layer 0 .* not a relative path inside the artifact/,
      bad,
    );
  }
  assert.match(artifactNamesProblem([named('x'), named('x', 1)]) ?? '', /layer 1 .*"x", as is layer 0$/);
  // A file where another layer needs a directory, either way round.
  assert.match(
    artifactNamesProblem([named('d'), named('d/b', 1)]) ?? '',
    /layer 1 .*under layer 0's file "d"/,
  );
  assert.match(
    artifactNamesProblem([named('d/b'), named('d', 1)]) ?? '',
    /layer 1 .*"d", the directory layer 0's file lies in$/,
  );
});

async function putBytes(store: ImageStore, data: Buffer): Promise<string> {
  const digest = sha256(data);
  await store.putBlob(digest, data.length, Readable.from([data]));
  return digest;
}

/** Stores an artifact's blobs and returns its commit (a title per file; one layer unnamed). */
async function artifactCommit(
  store: ImageStore,
  files: Record<string, string>,
  extra = '',
): Promise<ArtifactCommit> {
  const config = Buffer.from('{}');
  const configDigest = await putBytes(store, config);
  const layers: ArtifactFile[] = [];
  for (const [name, content] of Object.entries(files)) {
    const data = Buffer.from(content);
    layers.push({
      blobDigest: await putBytes(store, data),
      mediaType: 'text/plain',
      size: data.length,
      name,
    });
  }
  const unnamed = Buffer.from(`no name${extra}`);
  layers.push({
    blobDigest: await putBytes(store, unnamed),
    mediaType: 'text/plain',
    size: unnamed.length,
    name: '',
  });
  const manifest = Buffer.from(
    JSON.stringify({ schemaVersion: 2, extra, layers: layers.map((l) => l.blobDigest) }),
  );
  return {
    manifestDigest: sha256(manifest),
    manifestMediaType: 'application/vnd.oci.image.manifest.v1+json',
    manifest,
    artifact: {
      artifactType: 'application/vnd.example.data',
      configDigest,
      configMediaType: 'application/vnd.oci.empty.v1+json',
      files: layers,
    },
    tag: 'example.com/data:1',
    repository: 'example.com/data',
  };
}

test('commitArtifact: its named files as a read-only tree of links to the blobs, listed as an image', async () => {
  const root = await tempRoot();
  const store = await ImageStore.open(root, silentLogger);
  const commit = await artifactCommit(store, { 'weights.bin': 'W', 'conf/settings.json': '{"a":1}' });
  const record = await store.commitArtifact(commit);
  assert.equal(record.id, commit.manifestDigest, 'an artifact is known by its manifest digest');
  assert.deepEqual(record.repoTags, ['example.com/data:1']);
  assert.deepEqual(record.repoDigests, [`example.com/data@${commit.manifestDigest}`]);
  assert.deepEqual(record.layers, []);
  assert.equal(record.artifact?.artifactType, 'application/vnd.example.data');
  // Config and files, as an image's config and layers.
  assert.equal(record.size, 2 + commit.artifact.files.reduce((s, f) => s + f.size, 0));

  const files = store.artifactFilesDir(record);
  assert.deepEqual((await readdir(files)).sort(), ['conf', 'weights.bin']);
  assert.equal(await readFile(join(files, 'conf/settings.json'), 'utf8'), '{"a":1}');
  const weights = await stat(join(files, 'weights.bin'));
  const blob = await stat(store.blobs.path(commit.artifact.files[0].blobDigest));
  assert.equal(weights.ino, blob.ino, 'a link, not a copy');
  assert.equal(weights.mode & 0o777, 0o444);
  assert.equal((await stat(join(files, 'conf'))).mode & 0o777, 0o755);

  // Another process sees it, config and all (no image config to read).
  const other = await ImageStore.open(root, silentLogger, { sweepOrphans: false });
  const seen = (await other.list()).find((r) => r.id === record.id);
  assert.equal(seen?.artifact?.files.length, 3);
  assert.deepEqual(seen?.config.rootfs.diff_ids, []);
});

test('an artifact removed takes its tree and unshared blobs; a lost tree is made again at start-up', async () => {
  const root = await tempRoot();
  let store = await ImageStore.open(root, silentLogger);
  const first = await artifactCommit(store, { 'a.txt': 'shared', 'b.txt': 'only first' }, '1');
  const second = await artifactCommit(store, { 'c.txt': 'shared' }, '2');
  second.tag = 'example.com/data:2';
  const one = await store.commitArtifact(first);
  const two = await store.commitArtifact(second);

  await rm(join(store.artifactFilesDir(two), '..'), { recursive: true });
  store = await ImageStore.open(root, silentLogger);
  assert.equal(await readFile(join(store.artifactFilesDir(two), 'c.txt'), 'utf8'), 'shared');

  assert.equal(await store.deleteImage(one.id), true);
  await assert.rejects(stat(join(store.artifactFilesDir(one), '..')), { code: 'ENOENT' });
  const [a, b] = first.artifact.files;
  assert.equal(await store.hasBlob(a.blobDigest), true, 'the blob the other artifact shares stays');
  assert.equal(await store.hasBlob(b.blobDigest), false);
  assert.equal(await store.hasBlob(one.id), false, 'the manifest goes too');
  assert.equal(await readFile(join(store.artifactFilesDir(two), 'c.txt'), 'utf8'), 'shared');
  assert.equal(await store.deleteImage(one.id), false, 'idempotent');
});

test('start-up drops an artifact whose blob is gone, and removes old trees no artifact names', async () => {
  const root = await tempRoot();
  let store = await ImageStore.open(root, silentLogger);
  const kept = await store.commitArtifact(await artifactCommit(store, { 'k.txt': 'kept' }, 'k'));
  const broken = await artifactCommit(store, { 'x.txt': 'lost' }, 'x');
  broken.tag = 'example.com/data:broken';
  const record = await store.commitArtifact(broken);
  await rm(store.blobs.path(broken.artifact.files[0].blobDigest));
  // A tree nobody names (left by a crash between its rename and the commit), a day old.
  const orphan = await artifactCommit(store, { 'o.txt': 'orphan' }, 'o');
  await store.artifacts.materialize(orphan.manifestDigest, orphan.artifact.files);
  const old = new Date(Date.now() - 2 * 24 * 3600_000);
  await utimes(join(store.artifacts.dir, orphan.manifestDigest.slice(7)), old, old);

  store = await ImageStore.open(root, silentLogger);
  assert.deepEqual(
    (await store.list()).map((r) => r.id),
    [kept.id],
  );
  assert.equal(await store.artifacts.has(orphan.manifestDigest), false);
  assert.equal(await store.artifacts.has(kept.id), true);
  assert.notEqual(record.id, kept.id);
});
