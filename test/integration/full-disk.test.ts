/**
 * A node whose disk is full: RunPodSandbox and CreateContainer answer
 * RESOURCE_EXHAUSTED naming the pod or container and leave nothing behind;
 * once space is back, the same calls succeed. berth's root is a small tmpfs.
 */
import { after, before, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { status } from '@grpc/grpc-js';
import { startBerth, type RunningBerth } from '../helpers/berth-process.js';
import { run, runChecked } from '../../src/util/run.js';
import {
  cleanupBerth,
  containerConfig,
  grpcCode,
  importImages,
  podConfig,
  writeBridgeConflist,
} from './container-fixture.js';

let work: string;
let root: string;
let bridge: string;
let berth: RunningBerth;

before(async () => {
  work = await mkdtemp(join(tmpdir(), 'berth-full-disk-'));
  const dir = join(work, 'berth');
  root = join(dir, 'root');
  await mkdir(root, { recursive: true });
  await runChecked('mount', ['-t', 'tmpfs', '-o', 'size=40m', 'tmpfs', root]);
  bridge = `bt${randomBytes(4).toString('hex')}`;
  await writeBridgeConflist(join(dir, 'cni'), bridge, join(work, 'ipam'));
  berth = await startBerth({ dir });
  await importImages(berth.configFile, work);
});

after(async () => {
  if (berth) await cleanupBerth(berth);
  await run('umount', [root]);
  await run('/usr/sbin/ip', ['link', 'del', bridge]);
  await rm(work, { recursive: true, force: true });
});

it('RunPodSandbox and CreateContainer on a full disk: RESOURCE_EXHAUSTED naming the object, nothing half-made', async () => {
  const rt = berth.cri.runtime;
  const podWith = (hostNetwork: boolean) => podConfig(work, { hostNetwork });
  const existing = podWith(false);
  const pod = (await rt.runPodSandbox({ config: existing, runtimeHandler: '' })).podSandboxId;
  const filler = join(root, 'filler');
  // dd stops (failing) when the disk is full, which is the point.
  await run('dd', ['if=/dev/zero', `of=${filler}`, 'bs=1M']);

  await assert.rejects(
    rt.createContainer({
      podSandboxId: pod,
      config: containerConfig('web', { command: ['sleep', '100'] }),
      sandboxConfig: existing,
    }),
    grpcCode(status.RESOURCE_EXHAUSTED, /CreateContainer k8s_web_.*no space left on device/),
  );
  for (const hostNetwork of [true, false]) {
    const config = podWith(hostNetwork);
    await assert.rejects(
      rt.runPodSandbox({ config, runtimeHandler: '' }),
      grpcCode(
        status.RESOURCE_EXHAUSTED,
        new RegExp(`RunPodSandbox k8s_POD_${config.metadata!.name}_.*no space left`),
      ),
    );
  }
  assert.equal((await rt.version({ version: 'v1' })).runtimeName, 'berth');
  assert.deepEqual((await rt.listContainers({ filter: undefined })).containers, []);
  assert.deepEqual(
    (await rt.listPodSandbox({ filter: undefined })).items.map((p) => p.id),
    [pod],
  );
  assert.deepEqual(await readdir(join(root, 'state', 'containers')), []);

  await rm(filler);
  const { containerId } = await rt.createContainer({
    podSandboxId: pod,
    config: containerConfig('web', { command: ['sleep', '100'] }),
    sandboxConfig: existing,
  });
  await rt.startContainer({ containerId });
  const other = (await rt.runPodSandbox({ config: podWith(false), runtimeHandler: '' })).podSandboxId;
  for (const id of [pod, other]) {
    await rt.stopPodSandbox({ podSandboxId: id });
    await rt.removePodSandbox({ podSandboxId: id });
  }
});
