/**
 * Pulls that stop half-way: berth killed with SIGKILL while a layer streams
 * in (nothing looks complete after the restart, and the next pull finishes
 * the image, reusing the blobs already stored), and a registry that stops
 * sending (the progress timeout cancels the pull naming image and blob).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readdir, readFile, rm, statfs } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import { startBerth, type RunningBerth } from '../helpers/berth-process.js';
import { run, runChecked } from '../../src/util/run.js';
import { startRegistry, type TestRegistry } from '../helpers/registry.js';
import { buildImage, file, type BuiltImage } from '../helpers/image-builder.js';
import {
  ImageSpec,
  ImageStatusRequest,
  ListImagesRequest,
  PullImageRequest,
} from '../../src/generated/api.js';

let registry: TestRegistry;
const started: RunningBerth[] = [];

const toml = (host: string, timeout = 60) => `
[image]
max_concurrent_downloads = 4
pull_progress_timeout_seconds = ${timeout}

[image.registries."${host}"]
insecure = true
`;

function pull(berth: RunningBerth, ref: string): Promise<string> {
  return berth.cri.image
    .pullImage(PullImageRequest.fromPartial({ image: ImageSpec.fromPartial({ image: ref }) }))
    .then((r) => r.imageRef);
}

async function waitUntil(check: () => Promise<boolean>, what: string): Promise<void> {
  const deadline = Date.now() + 20_000;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

before(async () => {
  registry = await startRegistry({ mode: 'open', gate: true });
});

after(async () => {
  for (const b of started) await b.cleanup();
  await registry?.stop();
});

test('SIGKILL mid-pull: after the restart no image looks complete; pulling again gives the whole image', async () => {
  const big = randomBytes(6 * 1024 * 1024);
  const image: BuiltImage = await buildImage({
    layers: [
      { entries: [file('small', 'small layer')] },
      { entries: [file('big.bin', big)], compression: 'none' },
      { entries: [file('top', 'top layer')], compression: 'zstd' },
    ],
  });
  await registry.push('crash/app', 'v1', image);
  const bigBlob = image.layers[2].digest;
  registry.stallBlob(bigBlob, 2 * 1024 * 1024);
  let berth = await startBerth({ toml: toml(registry.host) });
  started.push(berth);
  const blobsDir = join(berth.dir, 'root', 'images', 'blobs', 'sha256');
  const ref = `${registry.host}/crash/app:v1`;
  const pulling = pull(berth, ref).then(
    () => 'finished',
    (err: Error) => err.message,
  );
  await registry.stalled();
  // The other layers finish while the big one is held half-way.
  const others = image.layers.filter((l) => l.digest !== bigBlob).map((l) => l.digest.slice(7));
  await waitUntil(async () => {
    const have = await readdir(blobsDir);
    return others.every((d) => have.includes(d));
  }, 'the other layers to be stored');
  const ingest = await readdir(join(berth.dir, 'root', 'images', 'ingest'));
  assert.equal(ingest.length, 1, 'the big layer is half-written in the ingest dir');
  await berth.kill();
  assert.notEqual(await pulling, 'finished');
  assert.ok(!(await readdir(blobsDir)).includes(bigBlob.slice(7)));

  registry.release();
  const before = (await registry.requests()).length;
  berth = await startBerth({ dir: berth.dir, toml: toml(registry.host) });
  started.push(berth);
  const list = await berth.cri.image.listImages(ListImagesRequest.fromPartial({}));
  assert.deepEqual(list.images, []);
  const st = await berth.cri.image.imageStatus(
    ImageStatusRequest.fromPartial({ image: ImageSpec.fromPartial({ image: ref }) }),
  );
  assert.equal(st.image, undefined);
  assert.deepEqual(
    await readdir(join(berth.dir, 'root', 'images', 'ingest')),
    [],
    'start-up dropped the partial blob',
  );

  assert.equal(await pull(berth, ref), image.configDigest);
  // Blobs stored before the kill were not fetched again.
  const fetched = (await registry.requests())
    .slice(before)
    .filter((r) => r.method === 'GET' && r.path.includes('/blobs/'))
    .map((r) => r.path.slice(r.path.lastIndexOf('/') + 1));
  assert.deepEqual(fetched, [bigBlob]);
  const verbose = await berth.cri.image.imageStatus(
    ImageStatusRequest.fromPartial({ image: ImageSpec.fromPartial({ image: ref }), verbose: true }),
  );
  const dirs = (JSON.parse(verbose.info.info) as { layerDirs: string[] }).layerDirs;
  assert.equal(dirs.length, 4);
  assert.deepEqual(await readFile(join(dirs[2], 'big.bin')), big);
  assert.equal(await readFile(join(dirs[3], 'top'), 'utf8'), 'top layer');
});

test('a registry that stops sending: the pull is cancelled after the progress timeout, naming image and blob', async () => {
  const image = await buildImage({
    base: false,
    layers: [{ entries: [file('slow.bin', randomBytes(3 * 1024 * 1024))], compression: 'none' }],
  });
  await registry.push('crash/slow', 'v1', image);
  const blob = image.layers[0].digest;
  registry.stallBlob(blob, 1024 * 1024);
  const berth = await startBerth({ toml: toml(registry.host, 2) });
  started.push(berth);
  const ref = `${registry.host}/crash/slow:v1`;
  const t0 = Date.now();
  await assert.rejects(pull(berth, ref), (err: { code: number; details: string }) => {
    assert.equal(err.code, status.UNAVAILABLE, err.details);
    assert.match(err.details, new RegExp(`${ref.replace(/[.]/g, '\\.')}.*no data for 2 s.*blob ${blob}`));
    return true;
  });
  const elapsed = Date.now() - t0;
  assert.ok(elapsed >= 1900 && elapsed < 10_000, `cancelled after ${elapsed} ms`);
  const list = await berth.cri.image.listImages(ListImagesRequest.fromPartial({}));
  assert.deepEqual(list.images, []);
  assert.deepEqual(await readdir(join(berth.dir, 'root', 'images', 'ingest')), []);
  registry.release();
  assert.equal(await pull(berth, ref), image.configDigest);
});

test('a full disk: the pull fails with RESOURCE_EXHAUSTED naming the image, berth lives on and keeps nothing of it', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'berth-test-full-'));
  const root = join(dir, 'root');
  await mkdir(root);
  await runChecked('mount', ['-t', 'tmpfs', '-o', 'size=24m', 'tmpfs', root]);
  let berth: RunningBerth | undefined;
  try {
    berth = await startBerth({ dir, toml: toml(registry.host) });
    // Incompressible: two 9 MiB layers are stored twice over (blob, unpacked) and cannot fit.
    const big = await buildImage({
      base: false,
      layers: [
        { entries: [file('a.bin', randomBytes(9 << 20))], compression: 'gzip' },
        { entries: [file('b.bin', randomBytes(9 << 20))], compression: 'gzip' },
      ],
    });
    const small = await buildImage({
      base: false,
      layers: [{ entries: [file('s', 'small')], compression: 'gzip' }],
    });
    await registry.push('full/big', 'v1', big);
    await registry.push('full/small', 'v1', small);
    const ref = `${registry.host}/full/big:v1`;
    await assert.rejects(pull(berth, ref), (err: { code: number; details: string }) => {
      assert.equal(err.code, status.RESOURCE_EXHAUSTED, err.details);
      assert.match(
        err.details,
        new RegExp(`pull of ${ref.replace(/[.]/g, '\\.')}: .*no space left on device`),
      );
      return true;
    });
    // Still serving (an undici body destroyed with nobody listening used to end the daemon).
    assert.equal((await berth.cri.runtime.version({ version: 'v1' })).runtimeName, 'berth');
    const list = await berth.cri.image.listImages(ListImagesRequest.fromPartial({}));
    assert.deepEqual(list.images, []);
    assert.deepEqual(await readdir(join(root, 'images', 'ingest')), []);
    const fs = await statfs(root);
    assert.ok(
      fs.bavail * fs.bsize > 16 << 20,
      `the failed pull's data was removed (${fs.bavail * fs.bsize} bytes free)`,
    );
    assert.equal(await pull(berth, `${registry.host}/full/small:v1`), small.configDigest);
  } finally {
    await berth?.stop();
    await run('umount', [root]);
    await rm(dir, { recursive: true, force: true });
  }
});

test('a client that gives up mid-pull (deadline) leaves berth serving; the image can be pulled after', async () => {
  const image = await buildImage({
    base: false,
    layers: [{ entries: [file('held.bin', randomBytes(3 * 1024 * 1024))], compression: 'none' }],
  });
  await registry.push('crash/held', 'v1', image);
  registry.stallBlob(image.layers[0].digest, 1024 * 1024);
  const berth = await startBerth({ toml: toml(registry.host) });
  started.push(berth);
  const ref = `${registry.host}/crash/held:v1`;
  await assert.rejects(
    berth.cri.image.pullImage(
      PullImageRequest.fromPartial({ image: ImageSpec.fromPartial({ image: ref }) }),
      {
        deadlineMs: 1_500,
      },
    ),
    (err: { code: number }) => err.code === status.DEADLINE_EXCEEDED,
  );
  await new Promise((r) => setTimeout(r, 500));
  assert.equal((await berth.cri.runtime.version({ version: 'v1' })).runtimeName, 'berth');
  registry.release();
  assert.equal(await pull(berth, ref), image.configDigest);
  assert.deepEqual(await readdir(join(berth.dir, 'root', 'images', 'ingest')), []);
});
