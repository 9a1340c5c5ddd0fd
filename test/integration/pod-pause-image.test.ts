/**
 * runtime.pause_image: the infra runs from a pulled image (pulled on demand
 * from the local registry, pinned), with its rootfs a read-only overlay of the
 * image's layers that goes away with the pod.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { access, readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import { startBerth, type RunningBerth } from '../helpers/berth-process.js';
import { startRegistry, type TestRegistry } from '../helpers/registry.js';
import { buildImage, file, type BuiltImage } from '../helpers/image-builder.js';
import {
  ImageSpec,
  LinuxPodSandboxConfig,
  NamespaceMode,
  PodSandboxConfig,
  PodSandboxState,
} from '../../src/generated/api.js';

let registry: TestRegistry;
let berth: RunningBerth;
let image: BuiltImage;
let ref: string;

async function exists(path: string): Promise<boolean> {
  try {
    await access(path);
    return true;
  } catch {
    return false;
  }
}

async function mountedAt(path: string): Promise<boolean> {
  const info = await readFile('/proc/self/mountinfo', 'utf8');
  return info.split('\n').some((line) => line.split(' ')[4] === path);
}

/** A host-network pod: this test is about the infra's image, not CNI. */
function hostPod(name: string): PodSandboxConfig {
  return PodSandboxConfig.fromPartial({
    metadata: { name, namespace: 'berth-test', uid: `uid-${name}`, attempt: 0 },
    hostname: name,
    linux: LinuxPodSandboxConfig.fromPartial({
      securityContext: {
        namespaceOptions: {
          network: NamespaceMode.NODE,
          pid: NamespaceMode.CONTAINER,
          ipc: NamespaceMode.POD,
        },
      },
    }),
  });
}

before(async () => {
  registry = await startRegistry();
  // Two layers: the infra root must be an overlay of both.
  image = await buildImage({
    layers: [{ entries: [file('pause-marker', 'from the pause image\n')] }],
    config: { entrypoint: ['/bin/sleep'], cmd: ['2147483647'] },
  });
  await registry.push('berth/pause', '1', image);
  ref = `${registry.host}/berth/pause:1`;
  berth = await startBerth({
    toml: `
[runtime]
pause_image = "${ref}"

[image.registries."${registry.host}"]
insecure = true
`,
  });
});

after(async () => {
  await berth?.cleanup();
  await registry?.stop();
});

test('the infra runs the configured pause image, pulled on demand and pinned', async () => {
  const before = await berth.cri.image.imageStatus({
    image: ImageSpec.fromPartial({ image: ref }),
    verbose: false,
  });
  assert.equal(before.image, undefined, 'the pause image is not there before the first pod');

  const { podSandboxId: id } = await berth.cri.runtime.runPodSandbox({
    config: hostPod('pause-a'),
    runtimeHandler: '',
  });
  const res = await berth.cri.runtime.podSandboxStatus({ podSandboxId: id, verbose: true });
  assert.equal(res.status?.state, PodSandboxState.SANDBOX_READY);
  const info = JSON.parse(res.info.info) as { pid: number; image: string; podDir: string };
  assert.equal(info.image, ref);
  const argv = async () => (await readFile(`/proc/${info.pid}/cmdline`, 'utf8')).split('\0').filter(Boolean);
  // `runc start` returns while `runc init` (for a moment with no argv at all) is still exec'ing.
  for (let i = 0; i < 300; i++) {
    const now = await argv();
    if (now.length > 0 && now[1] !== 'init') break;
    await new Promise((r) => setTimeout(r, 10));
  }
  assert.deepEqual(await argv(), ['/bin/sleep', '2147483647']);
  // Both layers are visible through the pod's read-only overlay root.
  const rootfs = join(info.podDir, 'rootfs');
  assert.equal(await mountedAt(rootfs), true);
  assert.equal(await readFile(join(rootfs, 'pause-marker'), 'utf8'), 'from the pause image\n');
  assert.equal(await exists(join(rootfs, 'bin', 'busybox')), true);

  const status_ = await berth.cri.image.imageStatus({
    image: ImageSpec.fromPartial({ image: ref }),
    verbose: false,
  });
  assert.equal(status_.image?.id, image.configDigest);
  assert.equal(status_.image?.pinned, true);

  // A second pod uses the stored image (one pull in the registry log).
  const { podSandboxId: second } = await berth.cri.runtime.runPodSandbox({
    config: hostPod('pause-b'),
    runtimeHandler: '',
  });
  const manifestGets = (await registry.requests()).filter(
    (r) => r.method === 'GET' && r.path.includes('/berth/pause/manifests/'),
  ).length;
  assert.equal(manifestGets, 1);

  // RemoveImage refuses the image while pods run on it, naming one.
  await assert.rejects(
    berth.cri.image.removeImage({ image: ImageSpec.fromPartial({ image: ref }) }),
    (err: { code: number; details: string }) => {
      assert.equal(err.code, status.FAILED_PRECONDITION);
      assert.match(err.details, /is in use by pod sandbox [0-9a-f]{64} \(k8s_POD_pause-[ab]_berth-test_/);
      return true;
    },
  );

  for (const pod of [id, second]) await berth.cri.runtime.removePodSandbox({ podSandboxId: pod });
  assert.equal(await mountedAt(rootfs), false);
  assert.equal(await exists(info.podDir), false);
  // With the pods gone, the image can go.
  await berth.cri.image.removeImage({ image: ImageSpec.fromPartial({ image: ref }) });
  assert.equal(
    (await berth.cri.image.imageStatus({ image: ImageSpec.fromPartial({ image: ref }), verbose: false }))
      .image,
    undefined,
  );
});

test('a one-layer pause image with nothing but its binary runs, and its layer stays untouched', async () => {
  // Like registry.k8s.io/pause: no /proc, /dev or /sys for the runtime to mount on.
  const bare = await buildImage({
    base: false,
    layers: [{ entries: [file('pause', await readFile('/usr/bin/catatonit'), { mode: 0o755 })] }],
    config: { entrypoint: ['/pause', '-P'] },
  });
  await registry.push('berth/bare-pause', '1', bare);
  const bareRef = `${registry.host}/berth/bare-pause:1`;
  await berth.stop();
  berth = await startBerth({
    dir: berth.dir,
    toml: `
[runtime]
pause_image = "${bareRef}"

[image.registries."${registry.host}"]
insecure = true
`,
  });
  const { podSandboxId: id } = await berth.cri.runtime.runPodSandbox({
    config: hostPod('bare'),
    runtimeHandler: '',
  });
  const res = await berth.cri.runtime.podSandboxStatus({ podSandboxId: id, verbose: true });
  assert.equal(res.status?.state, PodSandboxState.SANDBOX_READY);
  // The image's only layer still holds only the binary: mount points went to the pod's upper dir.
  const layers = await readdir(join(berth.dir, 'root', 'images', 'layers')).catch(() => [] as string[]);
  let found = false;
  for (const layer of layers) {
    const entries = await readdir(join(berth.dir, 'root', 'images', 'layers', layer, 'diff')).catch(
      () => [] as string[],
    );
    if (entries.includes('pause')) {
      found = true;
      assert.deepEqual(entries, ['pause']);
    }
  }
  assert.ok(found, `the bare pause layer is among ${layers.join(', ')}`);
  await berth.cri.runtime.removePodSandbox({ podSandboxId: id });
});

test('a pause image that cannot be pulled fails the pod with the reason and leaves nothing', async () => {
  await berth.stop();
  const missing = `${registry.host}/berth/absent:1`;
  berth = await startBerth({
    dir: berth.dir,
    toml: `
[runtime]
pause_image = "${missing}"

[image.registries."${registry.host}"]
insecure = true
`,
  });
  await assert.rejects(
    berth.cri.runtime.runPodSandbox({ config: hostPod('pause-c'), runtimeHandler: '' }),
    (err: { code: number; details: string }) => {
      assert.equal(err.code, status.FAILED_PRECONDITION);
      assert.match(
        err.details,
        new RegExp(`pause image "${missing.replace(/[.]/g, '\\.')}".*pulling it failed`),
      );
      return true;
    },
  );
  assert.deepEqual((await berth.cri.runtime.listPodSandbox({ filter: undefined })).items, []);
});
