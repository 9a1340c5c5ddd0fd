/**
 * Image volumes (the `image` volume source, KEP-4639): kubelet sends a Mount
 * naming an image; berth mounts that image read-only in the container, whole
 * or at image_sub_path (symlinks resolved inside the image), keeps the image
 * from being removed while the container exists, and unmounts it on removal.
 */
import { after, before, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import { buildImage, dir, file, symlink, writeDockerArchive } from '../helpers/image-builder.js';
import { ContainerState, ImageSpec } from '../../src/generated/api.js';
import {
  containerConfig,
  execOk,
  importArchive,
  grpcCode,
  imageVolume,
  podConfig,
  startEnv,
  waitForState,
  type Env,
} from './container-fixture.js';

const ARTIFACT = 'example.com/berth-test/artifact:1';
let env: Env;
let artifactId: string;
let pod: string;

before(async () => {
  env = await startEnv('image-volume');
  const artifact = await buildImage({
    base: false,
    layers: [
      {
        entries: [
          dir('data'),
          file('data/config.txt', 'from the image\n'),
          file('data/run.sh', '#!/bin/sh\necho ran\n', { mode: 0o755 }),
        ],
        compression: 'gzip',
      },
      // An absolute link: inside the image it means the image's /data, never the host's.
      { entries: [symlink('current', '/data'), file('top.txt', 'top layer\n')], compression: 'gzip' },
    ],
  });
  artifactId = artifact.configDigest;
  const archive = join(env.work, 'artifact.tar');
  await writeDockerArchive(archive, [{ image: artifact, repoTags: [ARTIFACT] }]);
  await importArchive(env.berth.configFile, archive);
  pod = (await env.berth.cri.runtime.runPodSandbox({ config: podConfig(env.work), runtimeHandler: '' }))
    .podSandboxId;
});

after(async () => {
  await env?.cleanup();
});

const imageMount = (containerPath: string, imageSubPath = '', image = ARTIFACT) =>
  imageVolume(containerPath, image, imageSubPath);

async function create(name: string, mounts: ReturnType<typeof imageMount>[]): Promise<string> {
  const { containerId } = await env.berth.cri.runtime.createContainer({
    podSandboxId: pod,
    config: containerConfig(name, { command: ['sleep', '1000'], mounts }),
    sandboxConfig: undefined,
  });
  return containerId;
}

async function mountsUnderBerth(): Promise<string[]> {
  const info = await readFile('/proc/self/mountinfo', 'utf8');
  return info
    .split('\n')
    .map((line) => line.split(' ')[4] ?? '')
    .filter((point) => point.startsWith(env.berth.dir) && point.includes('image-volumes'));
}

it('mounts an image read-only, whole and at image_sub_path (links resolved inside the image)', async () => {
  const rt = env.berth.cri.runtime;
  const id = await create('reader', [
    imageMount('/vol'),
    imageMount('/sub', 'data'),
    imageMount('/linked', 'current'),
  ]);
  await rt.startContainer({ containerId: id });
  assert.equal(
    await execOk(env.berth, id, ['cat', '/vol/data/config.txt', '/vol/top.txt']),
    'from the image\ntop layer\n',
  );
  assert.equal(await execOk(env.berth, id, ['cat', '/sub/config.txt']), 'from the image\n');
  assert.equal(await execOk(env.berth, id, ['cat', '/linked/config.txt']), 'from the image\n');
  const write = await rt.execSync({ containerId: id, cmd: ['touch', '/vol/new', '/sub/new'], timeout: 10n });
  assert.notEqual(write.exitCode, 0);
  assert.match(Buffer.from(write.stderr).toString(), /Read-only file system/);
  const mountLines = (await execOk(env.berth, id, ['cat', '/proc/mounts'])).split('\n');
  for (const path of ['/vol', '/sub', '/linked']) {
    const line = mountLines.find((l) => l.split(' ')[1] === path);
    assert.ok(line, `${path} is a mount`);
    assert.ok(line.split(' ')[3].split(',').includes('ro'), `${path} is read-only: ${line}`);
  }
  // ContainerStatus reports the image by its ID (kubelet's image GC matches mounts by ID).
  const st = (await rt.containerStatus({ containerId: id, verbose: false })).status!;
  const reported = st.mounts.find((m) => m.containerPath === '/sub');
  assert.equal(reported?.image?.image, artifactId);
  assert.equal(reported?.imageSubPath, 'data');

  // The image is in use while the container exists.
  await assert.rejects(
    env.berth.cri.image.removeImage({ image: ImageSpec.fromPartial({ image: ARTIFACT }) }),
    grpcCode(status.FAILED_PRECONDITION, new RegExp(`in use by container ${id}`)),
  );
  await rt.stopContainer({ containerId: id, timeout: 0n });
  await waitForState(env.berth, id, (s) => s.state === ContainerState.CONTAINER_EXITED);
  assert.ok((await mountsUnderBerth()).length >= 3);
  await rt.removeContainer({ containerId: id });
  assert.deepEqual(await mountsUnderBerth(), [], 'removal unmounts the image volumes');
});

it('refuses a missing image, a sub path that is absent or leaves the image, leaving nothing mounted', async () => {
  const rt = env.berth.cri.runtime;
  await assert.rejects(
    create('no-image', [imageMount('/vol', '', 'example.com/absent:1')]),
    grpcCode(status.NOT_FOUND, /image "example.com\/absent:1" of the image volume at \/vol not found/),
  );
  await assert.rejects(
    create('absent-sub', [imageMount('/vol', 'nope/deeper')]),
    grpcCode(
      status.INVALID_ARGUMENT,
      /image volume \/vol: image_sub_path "nope\/deeper" does not exist in the image/,
    ),
  );
  for (const bad of ['../etc', '/data']) {
    await assert.rejects(
      create('escaping-sub', [imageMount('/vol', bad)]),
      grpcCode(status.INVALID_ARGUMENT, /image_sub_path .* must be relative, without '\.\.'/),
    );
  }
  assert.deepEqual((await rt.listContainers({ filter: undefined })).containers, []);
  assert.deepEqual(await mountsUnderBerth(), []);
  // Nothing holds the image now.
  await env.berth.cri.image.removeImage({ image: ImageSpec.fromPartial({ image: artifactId }) });
  assert.equal(
    (
      await env.berth.cri.image.imageStatus({
        image: ImageSpec.fromPartial({ image: ARTIFACT }),
        verbose: false,
      })
    ).image,
    undefined,
  );
});
