/**
 * Pulls that stop half-way: berth killed with SIGKILL while a layer streams
 * in (nothing looks complete after the restart, and the next pull finishes
 * the image, reusing the blobs already stored), a registry that stops
 * sending (the progress timeout cancels the pull naming image and blob), a
 * held download that another pull joins, a full disk, a client giving up.
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
import { chainIds } from '../../src/image/store/layers.js';
import {
  ImageSpec,
  ImageStatusRequest,
  ListImagesRequest,
  PullImageRequest,
} from '../../src/generated/api.js';

let registry: TestRegistry;
const started: RunningBerth[] = [];

/** `image`: more [image] keys. */
const toml = (host: string, timeout = 60, image = '') => `
[image]
max_concurrent_downloads = 4
pull_progress_timeout_seconds = ${timeout}
${image}

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

/**
 * Kills berth while the big layer streams in. Kept blobs (`discard = false`)
 * or unpacked layers (`true`) that finished before the kill are not fetched again.
 */
async function sigkillMidPull(discard: boolean): Promise<void> {
  const big = randomBytes(6 * 1024 * 1024);
  const image: BuiltImage = await buildImage({
    layers: [
      { entries: [file('small', 'small layer')] },
      { entries: [file('big.bin', big)], compression: 'none' },
      { entries: [file('top', 'top layer')], compression: 'zstd' },
    ],
  });
  const repo = `crash/${discard ? 'discard' : 'keep'}`;
  await registry.push(repo, 'v1', image);
  const bigBlob = image.layers[2].digest;
  registry.stallBlob(bigBlob, 2 * 1024 * 1024);
  const settings = toml(registry.host, 60, `discard_unpacked_layers = ${discard}`);
  let berth = await startBerth({ toml: settings });
  started.push(berth);
  const imagesDir = join(berth.dir, 'root', 'images');
  const blobsDir = join(imagesDir, 'blobs', 'sha256');
  const diffIds = (JSON.parse(image.config.toString('utf8')) as { rootfs: { diff_ids: string[] } }).rootfs
    .diff_ids;
  const layerDirs = chainIds(diffIds).map((c) => c.slice(7));
  const ref = `${registry.host}/${repo}:v1`;
  const pulling = pull(berth, ref).then(
    () => 'finished',
    (err: Error) => err.message,
  );
  await registry.stalled();
  // The other layers finish while the big one is held half-way.
  const others = image.layers.map((l, i) => i).filter((i) => i !== 2);
  await waitUntil(async () => {
    const have = discard ? await readdir(join(imagesDir, 'layers')) : await readdir(blobsDir);
    return others.every((i) => have.includes(discard ? layerDirs[i] : image.layers[i].digest.slice(7)));
  }, 'the other layers to be stored');
  if (discard) {
    const halfMade = (await readdir(join(imagesDir, 'layers'))).filter((n) => n.startsWith('.'));
    assert.equal(halfMade.length, 1, 'the big layer is half-unpacked in a temp dir');
  } else {
    const ingest = await readdir(join(imagesDir, 'ingest'));
    assert.equal(ingest.length, 1, 'the big layer is half-written in the ingest dir');
  }
  await berth.kill();
  assert.notEqual(await pulling, 'finished');
  assert.ok(!(await readdir(blobsDir)).includes(bigBlob.slice(7)));
  assert.ok(!(await readdir(join(imagesDir, 'layers'))).includes(layerDirs[2]));

  registry.release();
  const before = (await registry.requests()).length;
  berth = await startBerth({ dir: berth.dir, toml: settings });
  started.push(berth);
  const list = await berth.cri.image.listImages(ListImagesRequest.fromPartial({}));
  assert.deepEqual(list.images, []);
  const st = await berth.cri.image.imageStatus(
    ImageStatusRequest.fromPartial({ image: ImageSpec.fromPartial({ image: ref }) }),
  );
  assert.equal(st.image, undefined);
  assert.deepEqual(await readdir(join(imagesDir, 'ingest')), [], 'start-up dropped the partial blob');
  assert.deepEqual(
    (await readdir(join(imagesDir, 'layers'))).filter((n) => n.startsWith('.')),
    [],
    'start-up dropped the partial layer',
  );

  assert.equal(await pull(berth, ref), image.configDigest);
  // What was stored before the kill was not fetched again.
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
  const blobs = await readdir(blobsDir);
  for (const layer of image.layers) {
    assert.equal(
      blobs.includes(layer.digest.slice(7)),
      !discard,
      `layer blob ${layer.digest} kept: ${!discard}`,
    );
  }
  assert.ok(blobs.includes(image.configDigest.slice(7)) && blobs.includes(image.manifestDigest.slice(7)));
}

test('SIGKILL mid-pull (layer blobs kept): after the restart no image looks complete; pulling again gives the whole image', () =>
  sigkillMidPull(false));

test('SIGKILL mid-pull (layer blobs discarded): after the restart no image looks complete; pulling again gives the whole image', () =>
  sigkillMidPull(true));

test('two images with one layer blob on different parents, pulled at once while that blob is held: both whole, whether blobs are kept or not', async () => {
  for (const discard of [true, false]) {
    const shared = {
      entries: [file('same.bin', randomBytes(3 * 1024 * 1024))],
      compression: 'none' as const,
    };
    const images = await Promise.all(
      ['p', 'q'].map((name) =>
        buildImage({ base: false, layers: [{ entries: [file(name, `${name}-${discard}`)] }, shared] }),
      ),
    );
    assert.equal(images[0].layers[1].digest, images[1].layers[1].digest, 'one blob');
    const repos = images.map((image, i) => `parents/${discard ? 'discard' : 'keep'}-${i}`);
    for (const [i, image] of images.entries()) await registry.push(repos[i], 'v1', image);
    registry.stallBlob(images[0].layers[1].digest, 1024 * 1024);
    const berth = await startBerth({ toml: toml(registry.host, 60, `discard_unpacked_layers = ${discard}`) });
    started.push(berth);
    const first = pull(berth, `${registry.host}/${repos[0]}:v1`);
    await registry.stalled();
    // The second pull reaches the held blob (a manifest and a config away) and joins the first one's download.
    const second = pull(berth, `${registry.host}/${repos[1]}:v1`);
    await new Promise((r) => setTimeout(r, 500));
    registry.release();
    assert.deepEqual(await Promise.all([first, second]), [images[0].configDigest, images[1].configDigest]);
    for (const i of [0, 1]) {
      const verbose = await berth.cri.image.imageStatus(
        ImageStatusRequest.fromPartial({
          image: ImageSpec.fromPartial({ image: `${registry.host}/${repos[i]}:v1` }),
          verbose: true,
        }),
      );
      const dirs = (JSON.parse(verbose.info.info) as { layerDirs: string[] }).layerDirs;
      assert.deepEqual(await readFile(join(dirs[1], 'same.bin')), shared.entries[0].content, `image ${i}`);
    }
    await berth.stop();
  }
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
    // Incompressible: three 9 MiB layers cannot fit (their blobs are not kept).
    const big = await buildImage({
      base: false,
      layers: ['a', 'b', 'c'].map((name) => ({
        entries: [file(`${name}.bin`, randomBytes(9 << 20))],
        compression: 'gzip' as const,
      })),
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
