/**
 * PullImage over a real berth's socket from Debian's docker-registry on
 * 127.0.0.1 (open mode): tags, digests, short names, OCI and Docker schema2,
 * multi-arch indexes, zstd and uncompressed layers, whiteouts, opaque dirs and
 * hardlinks, corrupted blobs, shared downloads and bad input.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readdir, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import { startBerth, type RunningBerth } from '../helpers/berth-process.js';
import { startRegistry, type TestRegistry } from '../helpers/registry.js';
import {
  buildImage,
  buildIndex,
  dir,
  file,
  hardlink,
  opaque,
  whiteout,
  type BuiltImage,
} from '../helpers/image-builder.js';
import {
  ImageSpec,
  ImageStatusRequest,
  ListImagesRequest,
  PullImageRequest,
} from '../../src/generated/api.js';
import { run } from '../../src/util/run.js';
import { chainIdOf } from '../../src/image/store/layers.js';

let registry: TestRegistry;
let berth: RunningBerth;
let work: string;
let plain: BuiltImage;
let layered: BuiltImage;

const spec = (image: string) => ImageSpec.fromPartial({ image });
const grpcCode = (code: number, pattern?: RegExp) => (err: { code: number; details: string }) => {
  assert.equal(err.code, code, `${status[err.code]}: ${err.details}`);
  if (pattern) assert.match(err.details, pattern);
  return true;
};

async function pull(image: string, auth?: object): Promise<string> {
  const res = await berth.cri.image.pullImage(
    PullImageRequest.fromPartial({ image: spec(image), ...(auth ? { auth } : {}) }),
  );
  return res.imageRef;
}

async function layerDirs(image: string): Promise<string[]> {
  const verbose = await berth.cri.image.imageStatus(
    ImageStatusRequest.fromPartial({ image: spec(image), verbose: true }),
  );
  return (JSON.parse(verbose.info.info) as { layerDirs: string[] }).layerDirs;
}

async function storeBlobs(): Promise<string[]> {
  return readdir(join(berth.dir, 'root', 'images', 'blobs', 'sha256'));
}

before(async () => {
  work = await mkdtemp(join(tmpdir(), 'berth-pull-'));
  registry = await startRegistry({ mode: 'open' });
  berth = await startBerth({
    toml: `
[image]
unqualified_search_registries = ["${registry.host}"]
max_concurrent_downloads = 2

[image.registries."${registry.host}"]
insecure = true
`,
  });
  plain = await buildImage({ config: { cmd: ['sh'], labels: { role: 'plain' } } });
  layered = await buildImage({
    layers: [
      {
        entries: [
          dir('data'),
          file('data/a', 'A'),
          file('data/b', 'B'),
          hardlink('data/b2', 'data/b'),
          dir('cache'),
          file('cache/old', 'old'),
          file('etc/motd', 'hi'),
        ],
        compression: 'zstd',
      },
      { entries: [whiteout('data/a'), opaque('cache'), file('cache/new', 'new')], compression: 'none' },
    ],
  });
  await registry.push('test/plain', 'v1', plain);
  await registry.push('test/layered', 'v1', layered);
});

after(async () => {
  await berth?.cleanup();
  await registry?.stop();
  await rm(work, { recursive: true, force: true });
});

test('pull by tag: image_ref is the image ID that ListImages and ImageStatus report', async () => {
  const ref = await pull(`${registry.host}/test/plain:v1`);
  assert.equal(ref, plain.configDigest);
  const status_ = await berth.cri.image.imageStatus(
    ImageStatusRequest.fromPartial({ image: spec(`${registry.host}/test/plain:v1`) }),
  );
  assert.equal(status_.image?.id, ref);
  assert.deepEqual(status_.image?.repoTags, [`${registry.host}/test/plain:v1`]);
  assert.deepEqual(status_.image?.repoDigests, [`${registry.host}/test/plain@${plain.manifestDigest}`]);
  const list = await berth.cri.image.listImages(ListImagesRequest.fromPartial({}));
  assert.ok(list.images.some((i) => i.id === ref));
  // The unpacked base layer is a busybox rootfs.
  const dirs = await layerDirs(ref);
  assert.equal(dirs.length, 1);
  assert.ok((await stat(join(dirs[0], 'bin', 'busybox'))).isFile());
  assert.deepEqual(await readFile(join(dirs[0], 'bin', 'busybox')), await readFile('/usr/bin/busybox'));
});

test('pull by digest, and by a short name through the search registries', async () => {
  const byDigest = await pull(`${registry.host}/test/plain@${plain.manifestDigest}`);
  assert.equal(byDigest, plain.configDigest);
  const short = await pull('test/plain:v1');
  assert.equal(short, plain.configDigest);
  // A digest that the repository does not have.
  await assert.rejects(
    pull(`${registry.host}/test/plain@sha256:${'0'.repeat(64)}`),
    grpcCode(status.NOT_FOUND, /test\/plain/),
  );
});

test('Docker schema2 image and manifest list; the node platform is chosen from the list', async () => {
  const docker = await buildImage({
    mediaTypes: 'docker',
    layers: [{ entries: [file('docker.txt', 'schema2')], compression: 'gzip' }],
  });
  const list = await buildIndex([docker], { mediaTypes: 'docker' });
  const listDigest = await registry.push('test/dlist', 'v1', list);
  const ref = await pull(`${registry.host}/test/dlist:v1`);
  assert.equal(ref, docker.configDigest);
  const st = await berth.cri.image.imageStatus(ImageStatusRequest.fromPartial({ image: spec(ref) }));
  // Both the list digest and the platform manifest digest name the image.
  assert.deepEqual(
    [...(st.image?.repoDigests ?? [])].sort(),
    [
      `${registry.host}/test/dlist@${docker.manifestDigest}`,
      `${registry.host}/test/dlist@${listDigest}`,
    ].sort(),
  );
  const byList = await berth.cri.image.imageStatus(
    ImageStatusRequest.fromPartial({ image: spec(`${registry.host}/test/dlist@${listDigest}`) }),
  );
  assert.equal(byList.image?.id, ref);
  const dirs = await layerDirs(ref);
  assert.equal(await readFile(join(dirs[1], 'docker.txt'), 'utf8'), 'schema2');
});

test('OCI multi-arch index: the amd64 image is pulled, the fakes are not fetched', async () => {
  const amd = await buildImage({ base: false, layers: [{ entries: [file('which', 'amd64')] }] });
  const index = await buildIndex([amd]);
  const indexDigest = await registry.push('test/multi', 'v1', index);
  const before = (await registry.requests()).length;
  const ref = await pull(`${registry.host}/test/multi@${indexDigest}`);
  assert.equal(ref, amd.configDigest);
  const dirs = await layerDirs(ref);
  assert.equal(await readFile(join(dirs[0], 'which'), 'utf8'), 'amd64');
  const fetched = (await registry.requests())
    .slice(before)
    .filter((r) => r.method === 'GET')
    .map((r) => r.path);
  for (const fake of index.images.slice(1)) {
    assert.ok(
      !fetched.some((p) => p.includes(fake.manifestDigest) || p.includes(fake.configDigest)),
      fetched.join('\n'),
    );
  }
});

test('an index without this platform: NOT_FOUND listing the platforms it offers', async () => {
  const arm = await buildImage({
    base: false,
    architecture: 'arm64',
    variant: 'v8',
    layers: [{ entries: [file('x', 'x')] }],
  });
  const index = await buildIndex([arm], {
    fakePlatforms: [{ architecture: 's390x' }, { architecture: 'arm', variant: 'v7' }],
  });
  await registry.push('test/foreign', 'v1', index);
  await assert.rejects(
    pull(`${registry.host}/test/foreign:v1`),
    grpcCode(status.NOT_FOUND, /linux\/amd64.*linux\/arm64\/v8, linux\/s390x, linux\/arm\/v7/),
  );
  const list = await berth.cri.image.listImages(ListImagesRequest.fromPartial({}));
  assert.ok(!list.images.some((i) => i.repoTags.some((t) => t.includes('test/foreign'))));
});

test('zstd and uncompressed layers with whiteouts, opaque dirs and hardlinks unpack into working overlay layers', async () => {
  const ref = await pull(`${registry.host}/test/layered:v1`);
  assert.equal(ref, layered.configDigest);
  const dirs = await layerDirs(ref);
  assert.equal(dirs.length, 3);
  // The uncompressed top layer records the whiteout as a 0/0 character device.
  const wh = await stat(join(dirs[2], 'data', 'a'));
  assert.ok(wh.isCharacterDevice());
  const mnt = join(work, 'mnt');
  await mkdir(mnt, { recursive: true });
  const mount = await run('/usr/bin/mount', [
    '-t',
    'overlay',
    'overlay',
    '-o',
    `lowerdir=${[...dirs].reverse().join(':')}`,
    mnt,
  ]);
  assert.equal(mount.code, 0, mount.stderr);
  try {
    assert.deepEqual((await readdir(join(mnt, 'data'))).sort(), ['b', 'b2']);
    assert.deepEqual(await readdir(join(mnt, 'cache')), ['new']);
    assert.equal((await stat(join(mnt, 'data/b'))).ino, (await stat(join(mnt, 'data/b2'))).ino);
    assert.equal(await readFile(join(mnt, 'etc/motd'), 'utf8'), 'hi');
    const sh = await run('/usr/sbin/chroot', [mnt, '/bin/sh', '-c', 'cat /data/b2']);
    assert.equal(sh.code, 0, sh.stderr);
    assert.equal(sh.stdout, 'B');
  } finally {
    await run('/usr/bin/umount', [mnt]);
  }
});

test('a corrupted blob in the registry fails the pull with DATA_LOSS and stores nothing', async () => {
  const bad = await buildImage({
    base: false,
    layers: [{ entries: [file('good', 'fine')] }, { entries: [file('big', Buffer.alloc(256 * 1024, 7))] }],
  });
  await registry.push('test/corrupt', 'v1', bad);
  const victim = bad.layers[1].digest;
  await registry.corruptBlob(victim);
  await assert.rejects(
    pull(`${registry.host}/test/corrupt:v1`),
    grpcCode(status.DATA_LOSS, new RegExp(`${victim}.*(digest|bytes)`)),
  );
  assert.ok(!(await storeBlobs()).includes(victim.slice(7)));
  const st = await berth.cri.image.imageStatus(
    ImageStatusRequest.fromPartial({ image: spec(`${registry.host}/test/corrupt:v1`) }),
  );
  assert.equal(st.image, undefined);
  const byId = await berth.cri.image.imageStatus(
    ImageStatusRequest.fromPartial({ image: spec(bad.configDigest) }),
  );
  assert.equal(byId.image, undefined);
  assert.deepEqual(await readdir(join(berth.dir, 'root', 'images', 'ingest')), []);
});

test('a layer escaping its root is rejected while it streams: the pull fails, no image, no layer left', async () => {
  const evil = await buildImage({
    base: false,
    layers: [
      { entries: [file('ok', 'fine')] },
      { entries: [dir('x'), file('x/../../escaped', 'gotcha')], compression: 'zstd' },
    ],
  });
  await registry.push('test/evil', 'v1', evil);
  await assert.rejects(
    pull(`${registry.host}/test/evil:v1`),
    grpcCode(status.INVALID_ARGUMENT, new RegExp(`${evil.layers[1].digest}.*rejected`)),
  );
  const st = await berth.cri.image.imageStatus(
    ImageStatusRequest.fromPartial({ image: spec(evil.configDigest) }),
  );
  assert.equal(st.image, undefined);
  const layersDir = join(berth.dir, 'root', 'images', 'layers');
  // Only whole layers of other images remain; no temp dir, no directory for the evil layer.
  const names = await readdir(layersDir);
  assert.ok(!names.some((n) => n.startsWith('.')), names.join(' '));
  const evilChain = chainIdOf(evil.layers[0].diffId, evil.layers[1].diffId);
  assert.ok(!names.includes(evilChain.slice(7)));
});

test('two concurrent pulls of one image share one download of each blob', async () => {
  const img = await buildImage({
    base: false,
    layers: [
      { entries: [file('one', Buffer.alloc(2 * 1024 * 1024, 1))] },
      { entries: [file('two', Buffer.alloc(2 * 1024 * 1024, 2))] },
    ],
  });
  await registry.push('test/shared', 'v1', img);
  const before = (await registry.requests()).length;
  const [a, b, c] = await Promise.all([
    pull(`${registry.host}/test/shared:v1`),
    pull(`${registry.host}/test/shared:v1`),
    pull('test/shared:v1'),
  ]);
  assert.equal(a, img.configDigest);
  assert.equal(b, a);
  assert.equal(c, a);
  const gets = (await registry.requests())
    .slice(before)
    .filter((r) => r.method === 'GET' && r.path.includes('/blobs/'));
  for (const l of img.layers) {
    assert.equal(gets.filter((r) => r.path.endsWith(l.digest)).length, 1, `layer ${l.digest} fetched once`);
  }
  // Pulled again: every blob is present, none is fetched.
  const again = (await registry.requests()).length;
  assert.equal(await pull(`${registry.host}/test/shared:v1`), a);
  assert.deepEqual(
    (await registry.requests()).slice(again).filter((r) => r.path.includes('/blobs/')),
    [],
  );
});

test('bad input: empty or malformed references, unknown images, unreachable registries', async () => {
  await assert.rejects(pull(''), grpcCode(status.INVALID_ARGUMENT, /empty/));
  await assert.rejects(pull('UPPER/Case:x'), grpcCode(status.INVALID_ARGUMENT, /lowercase/));
  await assert.rejects(pull('a b'), grpcCode(status.INVALID_ARGUMENT));
  await assert.rejects(pull(`${registry.host}/x@sha256:abc`), grpcCode(status.INVALID_ARGUMENT, /digest/));
  await assert.rejects(pull(`${registry.host}/test/nothing:v1`), grpcCode(status.NOT_FOUND, /test\/nothing/));
  await assert.rejects(pull(`${registry.host}/test/plain:nope`), grpcCode(status.NOT_FOUND, /nope/));
  // A port nothing listens on.
  const closed = await (async () => {
    const { createServer } = await import('node:net');
    const s = createServer();
    await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
    const port = (s.address() as { port: number }).port;
    await new Promise((r) => s.close(r));
    return port;
  })();
  await assert.rejects(
    pull(`127.0.0.1:${closed}/test/plain:v1`),
    grpcCode(status.UNAVAILABLE, new RegExp(`127\\.0\\.0\\.1:${closed}.*(ECONNREFUSED|connect)`)),
  );
  // berth is still serving.
  const list = await berth.cri.image.listImages(ListImagesRequest.fromPartial({}));
  assert.ok(list.images.length > 0);
});

test('SIGTERM after pulls (keep-alive registry connections open): berth exits 0 promptly', async () => {
  const t0 = Date.now();
  assert.equal(await berth.stop(), 0);
  assert.ok(Date.now() - t0 < 10_000, `exit took ${Date.now() - t0} ms`);
});
