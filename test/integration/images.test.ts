/**
 * ListImages, ImageStatus, RemoveImage, ImageFsInfo and `berth image import`
 * over a real berth's socket, with images built by the test.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { lstat, mkdir, mkdtemp, readFile, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import { startBerth, BERTH_MAIN, type RunningBerth } from '../helpers/berth-process.js';
import {
  buildImage,
  buildIndex,
  dir,
  file,
  hardlink,
  opaque,
  whiteout,
  writeDirectoryTar,
  writeDockerArchive,
  writeOciLayout,
  type BuiltImage,
} from '../helpers/image-builder.js';
import { run } from '../../src/util/run.js';
import { ImageSpec } from '../../src/generated/api.js';

let work: string;
let berth: RunningBerth | undefined;
let plain: BuiltImage;
let layered: BuiltImage;
let dockerArchive: string;
let ociArchive: string;
let multiArchive: string;

async function importFile(
  configFile: string,
  path: string,
): Promise<{ code: number | null; out: string; err: string }> {
  const child = spawn(process.execPath, [BERTH_MAIN, 'image', 'import', path, '--config', configFile], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const timer = setTimeout(() => child.kill('SIGKILL'), 120_000);
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
  clearTimeout(timer);
  return { code, out, err };
}

const grpcCode = (code: number) => (err: { code: number; details: string }) => {
  assert.equal(err.code, code, err.details);
  return true;
};

before(async () => {
  work = await mkdtemp(join(tmpdir(), 'berth-images-'));
  plain = await buildImage({ config: { user: '1000:1000', cmd: ['sh'], labels: { role: 'plain' } } });
  layered = await buildImage({
    config: { user: 'nobody', entrypoint: ['/bin/sh'] },
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
      {
        entries: [whiteout('data/a'), opaque('cache'), file('cache/new', 'new')],
        compression: 'none',
      },
    ],
  });
  dockerArchive = join(work, 'save.tar');
  await writeDockerArchive(dockerArchive, [
    { image: plain, repoTags: ['busybox:test', 'example.com/team/plain:v1'] },
  ]);
  const layout = join(work, 'layout');
  await writeOciLayout(layout, [{ tag: 'localhost:5000/stuff/layered:1', image: layered }]);
  ociArchive = join(work, 'layout.tar');
  await writeDirectoryTar(layout, ociArchive);
  const multi = join(work, 'multi');
  const other = await buildImage({ config: { cmd: ['echo', 'multi'] } });
  await writeOciLayout(multi, [{ tag: 'example.com/multi:latest', image: await buildIndex([other]) }]);
  multiArchive = join(work, 'multi.tar');
  await writeDirectoryTar(multi, multiArchive);
  berth = await startBerth({
    dir: join(work, 'berth'),
    toml: '\n[image]\npinned_images = ["busybox:test"]\n',
  });
});

after(async () => {
  await berth?.cleanup();
  await rm(work, { recursive: true, force: true });
});

test('import a docker-save archive while berth runs: the daemon lists it at once', async () => {
  const res = await importFile(berth!.configFile, dockerArchive);
  assert.equal(res.code, 0, res.err);
  assert.match(
    res.out,
    new RegExp(`imported docker.io/library/busybox:test, example.com/team/plain:v1 ${plain.configDigest}`),
  );
  const list = await berth!.cri.image.listImages({ filter: undefined });
  const image = list.images.find((i) => i.id === plain.configDigest);
  assert.ok(image, 'the imported image is listed');
  assert.deepEqual(image.repoTags.sort(), ['docker.io/library/busybox:test', 'example.com/team/plain:v1']);
  assert.equal(image.uid?.value, 1000n);
  assert.equal(image.username, '');
  assert.equal(image.pinned, true, 'busybox:test is in image.pinned_images');
  const expectedSize = plain.config.length + plain.layers.reduce((s, l) => s + l.tar.length, 0);
  assert.equal(image.size, BigInt(expectedSize));
});

test('import an OCI layout tarball with the daemon stopped; it is there after the start', async () => {
  const dir = berth!.dir;
  assert.equal(await berth!.stop(), 0);
  let res;
  try {
    res = await importFile(berth!.configFile, ociArchive);
  } finally {
    berth = await startBerth({ dir, toml: '\n[image]\npinned_images = ["busybox:test"]\n' });
  }
  assert.equal(res.code, 0, res.err);
  assert.match(res.out, /imported localhost:5000\/stuff\/layered:1 /);
  const found = await berth.cri.image.imageStatus({
    image: ImageSpec.fromPartial({ image: 'localhost:5000/stuff/layered:1' }),
    verbose: false,
  });
  assert.equal(found.image?.id, layered.configDigest);
  assert.deepEqual(found.image?.repoDigests, [`localhost:5000/stuff/layered@${layered.manifestDigest}`]);
  assert.equal(found.image?.username, 'nobody');
  assert.equal(found.image?.uid, undefined);
  assert.equal(found.image?.pinned, false);
});

test('import a multi-arch layout picks this node’s platform', async () => {
  const res = await importFile(berth!.configFile, multiArchive);
  assert.equal(res.code, 0, res.err);
  const st = await berth!.cri.image.imageStatus({
    image: ImageSpec.fromPartial({ image: 'example.com/multi' }),
    verbose: false,
  });
  assert.ok(st.image, 'example.com/multi:latest is present');
  const config = JSON.parse(
    (
      await berth!.cri.image.imageStatus({
        image: ImageSpec.fromPartial({ image: st.image.id }),
        verbose: true,
      })
    ).info.config,
  ) as { architecture: string };
  assert.equal(config.architecture, 'amd64');
});

test('import rejects garbage with a clear message and stores no image', async () => {
  const junk = join(work, 'junk.tar');
  await writeDockerArchive(junk, []);
  const { writeFile } = await import('node:fs/promises');
  await writeFile(junk, 'this is not a tar archive at all'.repeat(40));
  const before = (await berth!.cri.image.listImages({ filter: undefined })).images.length;
  const res = await importFile(berth!.configFile, junk);
  assert.notEqual(res.code, 0);
  assert.match(res.err, /cannot import .*junk\.tar/);
  assert.equal((await berth!.cri.image.listImages({ filter: undefined })).images.length, before);
});

test('ImageStatus resolves tags, short names, IDs, ID prefixes and digests; verbose has manifest and config', async () => {
  const cri = berth!.cri.image;
  const spec = (image: string) => ({ image: ImageSpec.fromPartial({ image }), verbose: false });
  for (const ref of [
    'busybox:test',
    'docker.io/library/busybox:test',
    plain.configDigest,
    plain.configDigest.slice(7),
    plain.configDigest.slice(7, 19),
  ]) {
    assert.equal((await cri.imageStatus(spec(ref))).image?.id, plain.configDigest, ref);
  }
  assert.equal(
    (await cri.imageStatus(spec(`localhost:5000/stuff/layered@${layered.manifestDigest}`))).image?.id,
    layered.configDigest,
  );
  const verbose = await cri.imageStatus({
    image: ImageSpec.fromPartial({ image: 'localhost:5000/stuff/layered:1' }),
    verbose: true,
  });
  assert.equal(JSON.parse(verbose.info.manifest).config.digest, layered.configDigest);
  assert.deepEqual(JSON.parse(verbose.info.config).config.Entrypoint, ['/bin/sh']);
});

test('ImageStatus: absent is an empty answer; empty or malformed references are INVALID_ARGUMENT', async () => {
  const cri = berth!.cri.image;
  const absent = await cri.imageStatus({
    image: ImageSpec.fromPartial({ image: 'example.com/nothing:here' }),
    verbose: false,
  });
  assert.equal(absent.image, undefined);
  const absentId = await cri.imageStatus({
    image: ImageSpec.fromPartial({ image: `sha256:${'e'.repeat(64)}` }),
    verbose: false,
  });
  assert.equal(absentId.image, undefined);
  await assert.rejects(
    cri.imageStatus({ image: ImageSpec.fromPartial({ image: '' }), verbose: false }),
    grpcCode(status.INVALID_ARGUMENT),
  );
  await assert.rejects(
    cri.imageStatus({ image: undefined, verbose: false }),
    grpcCode(status.INVALID_ARGUMENT),
  );
  await assert.rejects(
    cri.imageStatus({ image: ImageSpec.fromPartial({ image: 'Bad Name::x' }), verbose: false }),
    (err: { code: number; details: string }) => {
      assert.equal(err.code, status.INVALID_ARGUMENT);
      assert.match(err.details, /Bad Name::x/);
      return true;
    },
  );
});

test('ListImages with a filter', async () => {
  const cri = berth!.cri.image;
  const one = await cri.listImages({ filter: { image: ImageSpec.fromPartial({ image: 'busybox:test' }) } });
  assert.deepEqual(
    one.images.map((i) => i.id),
    [plain.configDigest],
  );
  const none = await cri.listImages({
    filter: { image: ImageSpec.fromPartial({ image: 'example.com/absent:1' }) },
  });
  assert.deepEqual(none.images, []);
  await assert.rejects(
    cri.listImages({ filter: { image: ImageSpec.fromPartial({ image: 'UPPER:case:x' }) } }),
    grpcCode(status.INVALID_ARGUMENT),
  );
});

test('layers are overlay-ready: whiteouts, opaque dirs and hardlinks work in a real overlay mount', async () => {
  const verbose = await berth!.cri.image.imageStatus({
    image: ImageSpec.fromPartial({ image: 'localhost:5000/stuff/layered:1' }),
    verbose: true,
  });
  const dirs = (JSON.parse(verbose.info.info) as { layerDirs: string[] }).layerDirs;
  assert.equal(dirs.length, 3);
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
    const sh = await run('/usr/sbin/chroot', [mnt, '/bin/sh', '-c', 'cat /data/b2; ls /bin | wc -l']);
    assert.equal(sh.code, 0, sh.stderr);
    assert.match(sh.stdout, /^B\d+/);
  } finally {
    await run('/usr/bin/umount', [mnt]);
  }
});

test('ImageFsInfo reports bytes and inodes of the image store with its mount point', async () => {
  const res = await berth!.cri.image.imageFsInfo({});
  assert.equal(res.imageFilesystems.length, 1);
  const fs = res.imageFilesystems[0];
  assert.ok(fs.usedBytes!.value > BigInt(plain.layers[0].tar.length), 'at least the busybox layer');
  assert.ok(fs.inodesUsed!.value > 100n);
  assert.ok(fs.fsId!.mountpoint.startsWith('/'));
  assert.ok(fs.timestamp > 0n);
});

test('RemoveImage: a tag, then the last tag, by ID; idempotent; shared layers stay', async () => {
  const cri = berth!.cri.image;
  const spec = (image: string) => ({ image: ImageSpec.fromPartial({ image }) });
  await assert.rejects(cri.removeImage(spec('')), grpcCode(status.INVALID_ARGUMENT));
  await cri.removeImage(spec('example.com/team/plain:v1'));
  const left = await cri.imageStatus({ ...spec('busybox:test'), verbose: true });
  assert.deepEqual(left.image?.repoTags, ['docker.io/library/busybox:test']);
  const plainDirs = (JSON.parse(left.info.info) as { layerDirs: string[] }).layerDirs;
  await cri.removeImage(spec('busybox:test'));
  assert.equal((await cri.imageStatus({ ...spec(plain.configDigest), verbose: false })).image, undefined);
  // The busybox base layer is shared with the layered image: it stays.
  const layeredStatus = await cri.imageStatus({ ...spec('localhost:5000/stuff/layered:1'), verbose: true });
  const layeredDirs = (JSON.parse(layeredStatus.info.info) as { layerDirs: string[] }).layerDirs;
  assert.equal(layeredDirs[0], plainDirs[0]);
  assert.ok((await lstat(layeredDirs[0])).isDirectory());
  // Idempotent.
  await cri.removeImage(spec('busybox:test'));
  await cri.removeImage(spec(plain.configDigest));
  // By ID: every tag goes, and the layers only this image used.
  await cri.removeImage(spec(layered.configDigest));
  assert.equal(
    (await cri.imageStatus({ ...spec('localhost:5000/stuff/layered:1'), verbose: false })).image,
    undefined,
  );
  await assert.rejects(lstat(layeredDirs[2]), /ENOENT/);
  const blobs = await readdir(join(berth!.dir, 'root', 'images', 'blobs', 'sha256'));
  assert.ok(!blobs.includes(layered.layers[2].digest.slice(7)), 'the removed image’s own blobs are gone');
});

test('one image under three tags from two registries: removing it by ID from 5 calls at once all succeed, every name gone at once', async () => {
  const cri = berth!.cri.image;
  const spec = (image: string) => ({ image: ImageSpec.fromPartial({ image }) });
  const tagged = await buildImage({ config: { cmd: ['sh'], labels: { role: 'tagged' } } });
  const names = ['example.com/tags/img:1', 'example.com/tags/img:2', 'mirror.example.org/tags/img:3'];
  const archive = join(work, 'tags.tar');
  await writeDockerArchive(archive, [{ image: tagged, repoTags: names }]);
  const imported = await importFile(berth!.configFile, archive);
  assert.equal(imported.code, 0, imported.err);
  const listed = (await cri.listImages({ filter: undefined })).images.filter(
    (i) => i.id === tagged.configDigest,
  );
  assert.equal(listed.length, 1);
  assert.deepEqual([...listed[0].repoTags].sort(), [...names].sort());
  for (const name of names)
    assert.equal((await cri.imageStatus({ ...spec(name), verbose: false })).image?.id, tagged.configDigest);
  // As critest v1.36 does: every RemoveImage succeeds, and the image is gone for each caller right after.
  const seen = await Promise.all(
    Array.from({ length: 5 }, async () => {
      await cri.removeImage(spec(tagged.configDigest));
      return (await cri.imageStatus({ ...spec(tagged.configDigest), verbose: false })).image;
    }),
  );
  assert.deepEqual(seen, [undefined, undefined, undefined, undefined, undefined]);
  for (const name of names)
    assert.equal((await cri.imageStatus({ ...spec(name), verbose: false })).image, undefined);
  const after = (await cri.listImages({ filter: undefined })).images;
  assert.ok(!after.some((i) => i.id === tagged.configDigest || i.repoTags.some((t) => names.includes(t))));
});

test('an import killed with SIGKILL mid-stream leaves no image; the next start cleans up and a retry succeeds', async () => {
  const dir = berth!.dir;
  assert.equal(await berth!.stop(), 0);
  const big = await buildImage({
    base: false,
    layers: [{ entries: [file('big', randomBytes(48 * 1024 * 1024))], compression: 'none' }],
  });
  const archive = join(work, 'big.tar');
  await writeDockerArchive(archive, [{ image: big, repoTags: ['example.com/big:1'] }]);
  const ingest = join(dir, 'root', 'images', 'ingest');
  const child = spawn(
    process.execPath,
    [BERTH_MAIN, 'image', 'import', archive, '--config', berth!.configFile],
    {
      stdio: 'ignore',
    },
  );
  const exited = new Promise((resolve) => child.once('exit', resolve));
  let killedMidIngest = false;
  try {
    const deadline = Date.now() + 60_000;
    while (Date.now() < deadline && child.exitCode === null) {
      if ((await readdir(ingest).catch(() => [])).length > 0) {
        child.kill('SIGKILL');
        killedMidIngest = true;
        break;
      }
      await new Promise((r) => setTimeout(r, 2));
    }
  } finally {
    if (child.exitCode === null) child.kill('SIGKILL');
    await exited;
    berth = await startBerth({ dir, toml: '\n[image]\npinned_images = ["busybox:test"]\n' });
  }
  assert.ok(killedMidIngest, 'the import was killed while a blob was streaming in');
  const st = await berth.cri.image.imageStatus({
    image: ImageSpec.fromPartial({ image: 'example.com/big:1' }),
    verbose: false,
  });
  assert.equal(st.image, undefined, 'no half-imported image is visible');
  assert.deepEqual(await readdir(ingest), [], 'start-up removed the half-written blob');
  const res = await importFile(berth.configFile, archive);
  assert.equal(res.code, 0, res.err);
  const after = await berth.cri.image.imageStatus({
    image: ImageSpec.fromPartial({ image: 'example.com/big:1' }),
    verbose: false,
  });
  assert.equal(after.image?.id, big.configDigest);
  await berth.cri.image.removeImage({ image: ImageSpec.fromPartial({ image: big.configDigest }) });
});
