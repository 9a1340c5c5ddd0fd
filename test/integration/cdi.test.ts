/**
 * CDI devices (what kubelet sends for DRA claims and CDI-aware device
 * plugins): a spec file in runtime.cdi_spec_dirs says what a named device
 * adds, and the container gets it — env, a device node the device cgroup
 * lets it use, a mount, an extra group. An unknown device fails the create.
 */
import { after, before, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import { containerConfig, execOk, grpcCode, podConfig, startEnv, type Env } from './container-fixture.js';

let env: Env;
let cdiDir: string;
let pod: string;

before(async () => {
  cdiDir = await mkdtemp(join(tmpdir(), 'berth-cdi-specs-'));
  const data = join(cdiDir, 'data');
  await mkdir(data);
  await writeFile(join(data, 'firmware.bin'), 'vendor firmware\n');
  await writeFile(
    join(cdiDir, 'vendor.yaml'),
    [
      'cdiVersion: "0.6.0"',
      'kind: berth.test/accel',
      'containerEdits:',
      '  env: ["ACCEL_DRIVER=test"]',
      'devices:',
      '  - name: accel0',
      '    containerEdits:',
      '      env: ["ACCEL_VISIBLE=0"]',
      '      deviceNodes:',
      '        - path: /dev/accel0',
      '          hostPath: /dev/null',
      '      mounts:',
      `        - hostPath: ${data}`,
      '          containerPath: /opt/accel',
      '          options: [ro]',
      '      additionalGIDs: [4242]',
      '',
    ].join('\n'),
  );
  env = await startEnv('cdi', `\n[runtime]\ncdi_spec_dirs = ["${cdiDir}"]\n`);
  pod = (await env.berth.cri.runtime.runPodSandbox({ config: podConfig(env.work), runtimeHandler: '' }))
    .podSandboxId;
});

after(async () => {
  await env?.cleanup();
  await rm(cdiDir, { recursive: true, force: true });
});

it('a container naming a CDI device gets its env, device node (usable), mount and group', async () => {
  const rt = env.berth.cri.runtime;
  const { containerId } = await rt.createContainer({
    podSandboxId: pod,
    config: containerConfig('accel', {
      command: ['sleep', '1000'],
      CDIDevices: [{ name: 'berth.test/accel=accel0' }],
    }),
    sandboxConfig: undefined,
  });
  await rt.startContainer({ containerId });
  assert.equal(
    await execOk(env.berth, containerId, ['sh', '-c', 'echo $ACCEL_DRIVER $ACCEL_VISIBLE']),
    'test 0\n',
  );
  // /dev/null's numbers (1, 3) under the device's own name; the device cgroup lets it be written.
  assert.equal(
    await execOk(env.berth, containerId, ['stat', '-c', '%F %t %T', '/dev/accel0']),
    'character special file 1 3\n',
  );
  await execOk(env.berth, containerId, ['sh', '-c', 'echo hello > /dev/accel0']);
  assert.equal(await execOk(env.berth, containerId, ['cat', '/opt/accel/firmware.bin']), 'vendor firmware\n');
  const write = await rt.execSync({ containerId, cmd: ['touch', '/opt/accel/new'], timeout: 10n });
  assert.notEqual(write.exitCode, 0, 'the mount is read-only, as the spec says');
  assert.ok((await execOk(env.berth, containerId, ['id', '-G'])).trim().split(' ').includes('4242'));
  await rt.removeContainer({ containerId });
});

it('an unknown CDI device fails the create naming it, and leaves nothing', async () => {
  const rt = env.berth.cri.runtime;
  await assert.rejects(
    rt.createContainer({
      podSandboxId: pod,
      config: containerConfig('missing', {
        command: ['sleep', '1000'],
        CDIDevices: [{ name: 'berth.test/accel=accel9' }],
      }),
      sandboxConfig: undefined,
    }),
    grpcCode(status.NOT_FOUND, /CDI device berth\.test\/accel=accel9 not found in /),
  );
  assert.deepEqual((await rt.listContainers({ filter: undefined })).containers, []);
});
