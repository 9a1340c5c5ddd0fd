import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ContainerConfig } from '../../generated/api.js';
import { FailedPreconditionError, InvalidArgumentError, NotFoundError } from '../../errors.js';
import { cdiDeviceNames, cdiEditsFor } from './cdi.js';

async function withDirs(fn: (etc: string, run: string) => Promise<void>): Promise<void> {
  const base = await mkdtemp(join(tmpdir(), 'berth-cdi-'));
  const etc = join(base, 'etc');
  const run = join(base, 'run');
  await mkdir(etc);
  await mkdir(run);
  try {
    await fn(etc, run);
  } finally {
    await rm(base, { recursive: true, force: true });
  }
}

const gpuSpec = {
  cdiVersion: '0.6.0',
  kind: 'vendor.example/gpu',
  containerEdits: {
    env: ['VENDOR_LIB=1'],
    mounts: [{ hostPath: '/usr/lib', containerPath: '/vendor/lib', options: ['ro'] }],
  },
  devices: [
    {
      name: 'gpu0',
      containerEdits: {
        env: ['VISIBLE=0'],
        deviceNodes: [{ path: '/dev/vendor0', hostPath: '/dev/null', permissions: 'rw' }],
        hooks: [{ hookName: 'createContainer', path: '/usr/bin/true', args: ['true', 'gpu0'] }],
        additionalGIDs: [44, 44],
      },
    },
    {
      name: 'gpu1',
      containerEdits: {
        env: ['VISIBLE=1'],
        deviceNodes: [{ path: '/dev/vendor1', type: 'c', major: 195, minor: 1 }],
      },
    },
  ],
};

test('names come from CDI_devices and cdi.k8s.io annotations, each once', () => {
  const config = ContainerConfig.fromPartial({
    CDIDevices: [{ name: 'vendor.example/gpu=gpu0' }],
    annotations: { 'cdi.k8s.io/plugin': 'vendor.example/gpu=gpu0, vendor.example/gpu=gpu1', other: 'x=y' },
  });
  assert.deepEqual(cdiDeviceNames(config), ['vendor.example/gpu=gpu0', 'vendor.example/gpu=gpu1']);
});

test('a JSON spec: the spec-wide edits once, then each device’s; nodes from the host unless given whole', () =>
  withDirs(async (etc) => {
    await writeFile(join(etc, 'gpu.json'), JSON.stringify(gpuSpec));
    const edits = await cdiEditsFor(['vendor.example/gpu=gpu0', 'vendor.example/gpu=gpu1'], [etc], 'c');
    assert.deepEqual(edits.env, ['VENDOR_LIB=1', 'VISIBLE=0', 'VISIBLE=1']);
    assert.deepEqual(
      edits.devices.map((d) => [d.path, d.type, d.major, d.minor]),
      [
        ['/dev/vendor0', 'c', 1, 3],
        ['/dev/vendor1', 'c', 195, 1],
      ],
    );
    assert.deepEqual(edits.deviceRules, [
      { allow: true, type: 'c', major: 1, minor: 3, access: 'rw' },
      { allow: true, type: 'c', major: 195, minor: 1, access: 'rwm' },
    ]);
    assert.deepEqual(edits.mounts, [
      { destination: '/vendor/lib', type: 'bind', source: '/usr/lib', options: ['rbind', 'ro'] },
    ]);
    assert.deepEqual(edits.hooks, { createContainer: [{ path: '/usr/bin/true', args: ['true', 'gpu0'] }] });
    assert.deepEqual(edits.additionalGids, [44]);
  }));

test('a YAML spec in a later directory wins for the same device', () =>
  withDirs(async (etc, run) => {
    await writeFile(join(etc, 'gpu.json'), JSON.stringify(gpuSpec));
    await writeFile(
      join(run, 'gpu.yaml'),
      [
        'cdiVersion: "0.6.0"',
        'kind: vendor.example/gpu',
        'devices:',
        '  - name: gpu0',
        '    containerEdits:',
        '      env: ["FROM=run"]',
        '',
      ].join('\n'),
    );
    const edits = await cdiEditsFor(['vendor.example/gpu=gpu0'], [etc, run], 'c');
    assert.deepEqual(edits.env, ['FROM=run']);
    assert.deepEqual(edits.devices, []);
  }));

test('an unknown device is NOT_FOUND naming it and the spec files that could not be read; a bad name is INVALID_ARGUMENT', () =>
  withDirs(async (etc) => {
    await writeFile(join(etc, 'gpu.json'), JSON.stringify(gpuSpec));
    await writeFile(join(etc, 'broken.yaml'), 'kind: [');
    await assert.rejects(
      cdiEditsFor(
        ['vendor.example/gpu=gpu0', 'vendor.example/gpu=gpu9'],
        [etc, '/nonexistent/cdi'],
        'container "c"',
      ),
      (err: Error) =>
        err instanceof NotFoundError &&
        /container "c": CDI device vendor.example\/gpu=gpu9 not found in .*unreadable spec files: .*broken.yaml/.test(
          err.message,
        ),
    );
    await assert.rejects(cdiEditsFor(['gpu0'], [etc], 'c'), InvalidArgumentError);
    assert.deepEqual((await cdiEditsFor([], ['/nonexistent'], 'c')).devices, []);
  }));

test('a device that needs edits berth does not apply (netDevices, intelRdt) is refused, not half-given', () =>
  withDirs(async (etc) => {
    await writeFile(
      join(etc, 'nic.json'),
      JSON.stringify({
        cdiVersion: '1.0.0',
        kind: 'vendor.example/nic',
        devices: [
          { name: 'vf0', containerEdits: { netDevices: [{ hostInterfaceName: 'eth9', name: 'net1' }] } },
        ],
      }),
    );
    await assert.rejects(
      cdiEditsFor(['vendor.example/nic=vf0'], [etc], 'c'),
      (err: Error) =>
        err instanceof FailedPreconditionError &&
        /vendor.example\/nic=vf0: needs netDevices edits/.test(err.message),
    );
  }));
