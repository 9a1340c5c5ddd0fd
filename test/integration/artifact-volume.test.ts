/**
 * OCI artifacts as image volumes (KEP-4639): kubelet pulls an artifact (a
 * manifest whose config is not an image config, or that declares an
 * artifactType) like an image, then mounts it. berth stores its blobs as they
 * are, lists it, shows its titled layers as read-only files (whole or at
 * image_sub_path), refuses to run a container from it, keeps it while a
 * container mounts it and removes it whole.
 */
import { after, before, it } from 'node:test';
import assert from 'node:assert/strict';
import { stat } from 'node:fs/promises';
import { status } from '@grpc/grpc-js';
import { buildArtifact, type BuiltImage } from '../helpers/image-builder.js';
import { startRegistry, type TestRegistry } from '../helpers/registry.js';
import { ContainerState, ImageSpec } from '../../src/generated/api.js';
import {
  containerConfig,
  execOk,
  grpcCode,
  imageVolume,
  podConfig,
  startEnv,
  waitForState,
  type Env,
} from './container-fixture.js';

let registry: TestRegistry;
let env: Env;
let ref: string;
let artifact: BuiltImage;
let pod: string;

before(async () => {
  registry = await startRegistry({ mode: 'open' });
  env = await startEnv('artifact', `\n[image.registries."${registry.host}"]\ninsecure = true\n`);
  artifact = buildArtifact(
    [
      { name: 'hello.txt', content: 'hello from an artifact\n' },
      { name: 'models/weights.bin', content: 'WEIGHTS' },
      { content: 'a layer without a title is kept, not shown' },
    ],
    'application/vnd.example.model.v1',
  );
  await registry.push('berth-test/model', 'v1', artifact);
  ref = `${registry.host}/berth-test/model:v1`;
  pod = (await env.berth.cri.runtime.runPodSandbox({ config: podConfig(env.work), runtimeHandler: '' }))
    .podSandboxId;
});

after(async () => {
  await env?.cleanup();
  await registry?.stop();
});

it('pulls an artifact, lists it, mounts its titled files read-only; it stays while mounted and goes whole', async () => {
  const images = env.berth.cri.image;
  const rt = env.berth.cri.runtime;
  const { imageRef } = await images.pullImage({
    image: ImageSpec.fromPartial({ image: ref }),
    auth: undefined,
    sandboxConfig: undefined,
  });
  assert.equal(imageRef, artifact.manifestDigest, 'an artifact is known by its manifest digest');
  const listed = (await images.listImages({ filter: undefined })).images.find((i) => i.id === imageRef);
  assert.deepEqual(listed?.repoTags, [ref]);
  assert.deepEqual(listed?.repoDigests, [`${registry.host}/berth-test/model@${artifact.manifestDigest}`]);
  const st = await images.imageStatus({ image: ImageSpec.fromPartial({ image: ref }), verbose: true });
  assert.equal(st.image?.id, imageRef);
  assert.equal(st.info.config, '{}');
  assert.equal(JSON.parse(st.info.info).artifact.artifactType, 'application/vnd.example.model.v1');

  // Nothing runs from an artifact.
  await assert.rejects(
    rt.createContainer({
      podSandboxId: pod,
      config: containerConfig('runs-artifact', { image: { image: ref } }),
      sandboxConfig: undefined,
    }),
    grpcCode(
      status.FAILED_PRECONDITION,
      /is an OCI artifact \(application\/vnd\.example\.model\.v1\), not a container image/,
    ),
  );

  const { containerId } = await rt.createContainer({
    podSandboxId: pod,
    config: containerConfig('reader', {
      command: ['sleep', '1000'],
      mounts: [imageVolume('/model', ref), imageVolume('/weights', imageRef, 'models')],
    }),
    sandboxConfig: undefined,
  });
  await rt.startContainer({ containerId });
  assert.equal(await execOk(env.berth, containerId, ['ls', '/model']), 'hello.txt\nmodels\n');
  assert.equal(
    await execOk(env.berth, containerId, [
      'cat',
      '/model/hello.txt',
      '/model/models/weights.bin',
      '/weights/weights.bin',
    ]),
    'hello from an artifact\nWEIGHTSWEIGHTS',
  );
  // Readable by any user of the pod, writable by none.
  assert.equal(await execOk(env.berth, containerId, ['stat', '-c', '%a', '/model/hello.txt']), '444\n');
  const write = await rt.execSync({ containerId, cmd: ['touch', '/model/new'], timeout: 10n });
  assert.notEqual(write.exitCode, 0);
  assert.match(Buffer.from(write.stderr).toString(), /Read-only file system/);

  await assert.rejects(
    images.removeImage({ image: ImageSpec.fromPartial({ image: ref }) }),
    grpcCode(status.FAILED_PRECONDITION, new RegExp(`in use by container ${containerId}`)),
  );
  await rt.stopContainer({ containerId, timeout: 0n });
  await waitForState(env.berth, containerId, (s) => s.state === ContainerState.CONTAINER_EXITED);
  await rt.removeContainer({ containerId });
  const filesDir = JSON.parse(st.info.info).filesDir as string;
  await images.removeImage({ image: ImageSpec.fromPartial({ image: ref }) });
  assert.equal(
    (await images.imageStatus({ image: ImageSpec.fromPartial({ image: imageRef }), verbose: false })).image,
    undefined,
  );
  await assert.rejects(stat(filesDir), { code: 'ENOENT' });
});

it('an artifact whose titles leave it or clash is refused at pull, and nothing of it is listed', async () => {
  const images = env.berth.cri.image;
  for (const [tag, files] of [
    ['escape', [{ name: '../../etc/cron.d/x', content: 'nope' }]],
    [
      'clash',
      [
        { name: 'a', content: 'file' },
        { name: 'a/b', content: 'under a file' },
      ],
    ],
  ] as const) {
    const bad = buildArtifact([...files], 'application/vnd.example.bad');
    await registry.push('berth-test/bad', tag, bad);
    await assert.rejects(
      images.pullImage({
        image: ImageSpec.fromPartial({ image: `${registry.host}/berth-test/bad:${tag}` }),
        auth: undefined,
        sandboxConfig: undefined,
      }),
      grpcCode(
        status.FAILED_PRECONDITION,
        /artifact .*berth-test\/bad.*: layer \d+ \(sha256:[a-f0-9]{64}\) is named/,
      ),
    );
  }
  const ids = (await images.listImages({ filter: undefined })).images.map((i) => i.repoTags.join());
  assert.ok(!ids.some((t) => t.includes('berth-test/bad')), ids.join('; '));
});

it('ImageStatus verbose names an artifact config over 1 MiB instead of sending it', async () => {
  const images = env.berth.cri.image;
  const big = buildArtifact(
    [{ name: 'f', content: 'x' }],
    'application/vnd.example.big',
    Buffer.alloc(1536 * 1024, 'a'),
  );
  await registry.push('berth-test/big-config', 'v1', big);
  const image = ImageSpec.fromPartial({ image: `${registry.host}/berth-test/big-config:v1` });
  await images.pullImage({ image, auth: undefined, sandboxConfig: undefined });
  const st = await images.imageStatus({ image, verbose: true });
  assert.equal(st.info.config, `(config ${big.configDigest}: ${1536 * 1024} bytes, not shown)`);
  await images.removeImage({ image });
});
