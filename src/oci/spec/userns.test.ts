/** Specs of pods and containers in a pod user namespace (userns_options mode POD). */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, mkdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  ContainerConfig,
  NamespaceMode,
  PodSandboxConfig,
  type DeepPartial,
  type IDMapping,
} from '../../generated/api.js';
import { FailedPreconditionError, InvalidArgumentError } from '../../errors.js';
import type { ImageConfigFile } from '../../image/types.js';
import { buildContainerSpec, buildSandboxSpec } from './index.js';
import type { ContainerSpecInput, OciLinux, SpecHost } from './types.js';

const host: SpecHost = {
  cgroupDriver: 'cgroupfs',
  cgroupVersion: 1,
  boundingCapabilities: ['CAP_CHOWN', 'CAP_KILL'],
  seccompEnabled: true,
  appArmorEnabled: false,
  minOomScoreAdj: -1000,
  swapAccounting: true,
  hugetlb: false,
};
const uids: IDMapping[] = [{ containerId: 0, hostId: 100000, length: 65536 }];
const gids: IDMapping[] = [{ containerId: 0, hostId: 200000, length: 65536 }];
const image: ImageConfigFile = {
  architecture: 'amd64',
  os: 'linux',
  config: { Cmd: ['sh'], WorkingDir: '/made/here' },
  rootfs: { type: 'layers', diff_ids: [] },
};
let dir: string;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'berth-userns-spec-'));
  await mkdir(join(dir, 'rootfs', 'etc'), { recursive: true });
  await writeFile(join(dir, 'rootfs', 'etc', 'passwd'), 'root:x:0:0::/root:/bin/sh\n');
});
after(() => rm(dir, { recursive: true, force: true }));

function pod(mode = NamespaceMode.POD, partial: DeepPartial<PodSandboxConfig> = {}): PodSandboxConfig {
  return PodSandboxConfig.fromPartial({
    metadata: { name: 'web', namespace: 'default', uid: 'u', attempt: 0 },
    linux: {
      securityContext: {
        namespaceOptions: {
          pid: NamespaceMode.CONTAINER,
          usernsOptions: mode === NamespaceMode.POD ? { mode, uids, gids } : { mode },
        },
        ...partial.linux?.securityContext,
      },
    },
  });
}

const sandboxInput = (config: PodSandboxConfig, usernsPath?: string) => ({
  id: 'sb1',
  config,
  rootfs: '/pods/sb1/rootfs',
  args: ['/pause'],
  hostname: 'web',
  netnsPath: '/run/netns/sb1',
  shmPath: '/pods/sb1/shm',
  sysctls: {},
  cgroupParent: '',
  host,
  usernsPath,
});

function containerInput(config: DeepPartial<ContainerConfig>, podConfig = pod()): ContainerSpecInput {
  return {
    id: 'c1',
    config: ContainerConfig.fromPartial({ metadata: { name: 'app', attempt: 0 }, ...config }),
    sandbox: {
      id: 'sb1',
      config: podConfig,
      namespacePaths: {
        network: '/run/netns/sb1',
        ipc: '/proc/42/ns/ipc',
        uts: '/proc/42/ns/uts',
        user: '/pods/sb1/userns',
      },
      hostsPath: '',
      resolvConfPath: '',
      hostnamePath: '',
      shmPath: '/pods/sb1/shm',
      cgroupParent: '',
      hostname: 'web',
    },
    image,
    rootfs: join(dir, 'rootfs'),
    handler: { name: 'runc', path: '/usr/sbin/runc', root: '/run/none', type: 'oci' },
    host,
  };
}

test('the infra joins the pinned pod user namespace and carries its mappings', async () => {
  const spec = await buildSandboxSpec(sandboxInput(pod(), '/pods/sb1/userns'));
  const linux = spec.linux as OciLinux;
  assert.deepEqual(linux.namespaces, [
    { type: 'mount' },
    { type: 'user', path: '/pods/sb1/userns' },
    { type: 'network', path: '/run/netns/sb1' },
    { type: 'uts' },
    { type: 'ipc' },
    { type: 'pid' },
  ]);
  assert.deepEqual(linux.uidMappings, [{ containerID: 0, hostID: 100000, size: 65536 }]);
  assert.deepEqual(linux.gidMappings, [{ containerID: 0, hostID: 200000, size: 65536 }]);
});

test('the infra of a pod in the host user namespace has no user namespace or mappings', async () => {
  const spec = await buildSandboxSpec(sandboxInput(pod(NamespaceMode.NODE)));
  const linux = spec.linux as OciLinux;
  assert.ok(!linux.namespaces.some((n) => n.type === 'user'));
  assert.equal(linux.uidMappings, undefined);
});

test('an infra of a POD user namespace pod without a pinned namespace, or with an unmapped user, fails', async () => {
  await assert.rejects(buildSandboxSpec(sandboxInput(pod())), FailedPreconditionError);
  await assert.rejects(
    buildSandboxSpec(
      sandboxInput(
        pod(NamespaceMode.POD, { linux: { securityContext: { runAsUser: { value: 70000n } } } }),
        '/pods/sb1/userns',
      ),
    ),
    (err: unknown) => err instanceof InvalidArgumentError && /user 70000 is not mapped/.test(err.message),
  );
});

test("a container joins its pod's user namespace; the working directory berth makes belongs to the pod's root", async () => {
  const { spec } = await buildContainerSpec(containerInput({}));
  const linux = spec.linux as OciLinux;
  assert.deepEqual(linux.namespaces.slice(0, 2), [
    { type: 'mount' },
    { type: 'user', path: '/pods/sb1/userns' },
  ]);
  assert.deepEqual(linux.uidMappings, [{ containerID: 0, hostID: 100000, size: 65536 }]);
  assert.deepEqual(linux.gidMappings, [{ containerID: 0, hostID: 200000, size: 65536 }]);
  for (const path of ['made', 'made/here']) {
    const st = await stat(join(dir, 'rootfs', path));
    assert.deepEqual([st.uid, st.gid], [100000, 200000], path);
  }
});

test('a container asking for another user namespace than its pod, or an unmapped user, is refused', async () => {
  const refused = (pattern: RegExp) => (err: unknown) =>
    err instanceof InvalidArgumentError && pattern.test(err.message);
  await assert.rejects(
    buildContainerSpec(
      containerInput({
        linux: { securityContext: { namespaceOptions: { usernsOptions: { mode: NamespaceMode.NODE } } } },
      }),
    ),
    refused(/host's user namespace/),
  );
  await assert.rejects(
    buildContainerSpec(
      containerInput({
        linux: {
          securityContext: { namespaceOptions: { usernsOptions: { mode: NamespaceMode.CONTAINER } } },
        },
      }),
    ),
    refused(/mode CONTAINER is not supported/),
  );
  await assert.rejects(
    buildContainerSpec(containerInput({ linux: { securityContext: { runAsUser: { value: 65536n } } } })),
    refused(/user 65536 is not mapped/),
  );
});
