/**
 * Whole specs from buildSandboxSpec and buildContainerSpec, for cgroup v1 and
 * v2, cgroupfs and systemd (this machine has only v1 + cgroupfs, so v2 and
 * systemd are checked here on the spec itself).
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, mkdir, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  ContainerConfig,
  NamespaceMode,
  PodSandboxConfig,
  SecurityProfile_ProfileType,
  Signal,
  type DeepPartial,
} from '../../generated/api.js';
import type { ImageConfigFile } from '../../image/types.js';
import { InvalidArgumentError, FailedPreconditionError } from '../../errors.js';
import type { OciLinux, SpecHost, ContainerSpecInput, SandboxFacts } from './types.js';
import { buildContainerSpec, buildSandboxSpec } from './index.js';
import { ALL_CAPABILITIES, DEFAULT_MASKED_PATHS, DEFAULT_READONLY_PATHS } from './defaults.js';

let dir: string;
let rootfs: string;
const HOST_CAPS = ALL_CAPABILITIES.filter((c) => c !== 'CAP_SYS_RESOURCE');
const v1: SpecHost = {
  cgroupDriver: 'cgroupfs',
  cgroupVersion: 1,
  boundingCapabilities: HOST_CAPS,
  seccompEnabled: true,
  appArmorEnabled: false,
  minOomScoreAdj: 0,
  swapAccounting: true,
  hugetlb: false,
};
const v2systemd: SpecHost = { ...v1, cgroupVersion: 2, cgroupDriver: 'systemd', minOomScoreAdj: -1000 };
const handler = { name: 'runc', path: '/usr/sbin/runc', root: '/run/berth-test-none', type: 'oci' as const };

const image: ImageConfigFile = {
  architecture: 'amd64',
  os: 'linux',
  config: {
    User: 'app',
    Entrypoint: ['/bin/sh'],
    Cmd: ['-c', 'sleep 1'],
    Env: ['FOO=1'],
    WorkingDir: '/work',
    StopSignal: 'SIGQUIT',
  },
  rootfs: { type: 'layers', diff_ids: [] },
};

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'berth-build-'));
  rootfs = join(dir, 'rootfs');
  await mkdir(join(rootfs, 'etc'), { recursive: true });
  await writeFile(
    join(rootfs, 'etc/passwd'),
    'root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n',
  );
  await writeFile(join(rootfs, 'etc/group'), 'root:x:0:\napp:x:1000:\nwheel:x:10:app\n');
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

function podConfig(partial: DeepPartial<PodSandboxConfig> = {}): PodSandboxConfig {
  return PodSandboxConfig.fromPartial({
    metadata: { name: 'web', namespace: 'default', uid: 'uid-1', attempt: 0 },
    hostname: 'web-0',
    logDirectory: '/var/log/pods/x',
    annotations: { 'pod-note': 'yes' },
    ...partial,
  });
}

function facts(config: PodSandboxConfig, pid = true): SandboxFacts {
  return {
    id: 'sb1',
    config,
    namespacePaths: {
      network: '/run/netns/sb1',
      ipc: '/proc/42/ns/ipc',
      uts: '/proc/42/ns/uts',
      ...(pid ? { pid: '/proc/42/ns/pid' } : {}),
    },
    hostsPath: '/pods/sb1/hosts',
    resolvConfPath: '/pods/sb1/resolv.conf',
    hostnamePath: '/pods/sb1/hostname',
    shmPath: '/pods/sb1/shm',
    cgroupParent: '/kubepods/pod1',
    hostname: 'web-0',
  };
}

function containerInput(
  config: DeepPartial<ContainerConfig>,
  pod = podConfig(),
  host = v1,
): ContainerSpecInput {
  return {
    id: 'c1',
    config: ContainerConfig.fromPartial({ metadata: { name: 'app', attempt: 0 }, ...config }),
    sandbox: facts(pod),
    image,
    rootfs,
    handler,
    annotations: { 'io.kubernetes.cri.container-type': 'container' },
    host,
  };
}

test('infra spec: read-only rootfs, pod namespaces, sysctls, shm, clamped oom score, cgroupfs path', async () => {
  const spec = await buildSandboxSpec({
    id: 'sb1',
    config: podConfig({
      linux: {
        cgroupParent: '/kubepods/pod1',
        securityContext: {
          seccomp: { profileType: SecurityProfile_ProfileType.RuntimeDefault, localhostRef: '' },
        },
        resources: { cpuShares: 1024n, memoryLimitInBytes: 1000n },
      },
    }),
    rootfs: '/pause/rootfs',
    args: ['/pause'],
    hostname: 'web-0',
    netnsPath: '/run/netns/sb1',
    shmPath: '/pods/sb1/shm',
    sysctls: { 'net.ipv4.ip_forward': '1' },
    cgroupParent: '/kubepods/pod1',
    host: v1,
  });
  const linux = spec.linux as OciLinux;
  assert.deepEqual(spec.root, { path: '/pause/rootfs', readonly: true });
  assert.equal(spec.hostname, 'web-0');
  assert.deepEqual(spec.process?.args, ['/pause']);
  assert.equal(spec.process?.noNewPrivileges, true);
  assert.equal(spec.process?.oomScoreAdj, 0); // -998 clamped to berth's own 0
  assert.deepEqual(spec.process?.capabilities?.bounding, []);
  assert.deepEqual(linux.namespaces, [
    { type: 'mount' },
    { type: 'network', path: '/run/netns/sb1' },
    { type: 'uts' },
    { type: 'ipc' },
    { type: 'pid' },
  ]);
  assert.equal(linux.cgroupsPath, '/kubepods/pod1/berth-sb1');
  assert.deepEqual(linux.sysctl, { 'net.ipv4.ip_forward': '1' });
  assert.equal(linux.seccomp?.defaultAction, 'SCMP_ACT_ERRNO');
  assert.deepEqual(linux.maskedPaths, DEFAULT_MASKED_PATHS);
  const shm = spec.mounts?.find((m) => m.destination === '/dev/shm');
  assert.equal(shm?.source, '/pods/sb1/shm');
  assert.equal(spec.annotations?.['io.kubernetes.cri.container-type'], 'sandbox');
  assert.equal(spec.annotations?.['io.kubernetes.cri.sandbox-memory'], '1000');
  assert.equal(spec.annotations?.['pod-note'], 'yes');
});

test('infra spec: host network/IPC/PID, systemd slice, oom -998 where allowed', async () => {
  const spec = await buildSandboxSpec({
    id: 'sb2',
    config: podConfig({
      linux: {
        cgroupParent: 'kubepods-besteffort-pod1.slice',
        securityContext: {
          namespaceOptions: { network: NamespaceMode.NODE, ipc: NamespaceMode.NODE, pid: NamespaceMode.NODE },
        },
      },
    }),
    rootfs: '/pause/rootfs',
    args: ['/pause'],
    hostname: 'node',
    sysctls: {},
    cgroupParent: 'kubepods-besteffort-pod1.slice',
    host: v2systemd,
  });
  const linux = spec.linux as OciLinux;
  assert.deepEqual(linux.namespaces, [{ type: 'mount' }]);
  assert.equal(spec.hostname, undefined);
  assert.equal(linux.cgroupsPath, 'kubepods-besteffort-pod1.slice:berth:sb2');
  assert.equal(spec.process?.oomScoreAdj, -998);
  assert.equal(spec.mounts?.find((m) => m.destination === '/dev/shm')?.source, '/dev/shm');
  // Host IPC: a fresh mqueue mount shows the host's queues (the node may have no /dev/mqueue to bind).
  assert.equal(spec.mounts?.find((m) => m.destination === '/dev/mqueue')?.type, 'mqueue');
  await assert.rejects(
    buildSandboxSpec({
      id: 'sb3',
      config: podConfig(),
      rootfs: '/p',
      args: ['/pause'],
      hostname: 'h',
      sysctls: {},
      cgroupParent: '',
      host: v1,
      shmPath: '/s',
    }),
    /pod network namespace has no netns path/,
  );
  await assert.rejects(
    buildSandboxSpec({
      id: 'sb4',
      config: podConfig({
        linux: {
          securityContext: {
            namespaceOptions: { usernsOptions: { mode: NamespaceMode.POD, uids: [], gids: [] } },
          },
        },
      }),
      rootfs: '/p',
      args: ['/pause'],
      hostname: 'h',
      netnsPath: '/n',
      shmPath: '/s',
      sysctls: {},
      cgroupParent: '',
      host: v1,
    }),
    /user namespace mode POD needs a uid mapping/,
  );
});

test('infra spec of a privileged pod: no capabilities, but sysfs and cgroupfs read-write', async () => {
  const spec = await buildSandboxSpec({
    id: 'sb5',
    config: podConfig({ linux: { securityContext: { privileged: true } } }),
    rootfs: '/pause/rootfs',
    args: ['/pause'],
    hostname: 'h',
    netnsPath: '/run/netns/x',
    shmPath: '/s',
    sysctls: {},
    cgroupParent: '',
    host: v1,
  });
  assert.deepEqual(spec.process?.capabilities?.bounding, []);
  assert.deepEqual(spec.mounts?.find((m) => m.destination === '/sys')?.options, [
    'nosuid',
    'noexec',
    'nodev',
    'rw',
  ]);
  assert.ok(spec.mounts?.find((m) => m.destination === '/sys/fs/cgroup')?.options?.includes('rw'));
  assert.deepEqual((spec.linux as OciLinux).maskedPaths, DEFAULT_MASKED_PATHS);
  assert.equal((spec.linux as OciLinux).cgroupsPath, '/berth-sb5');
});

test('container spec: image user and groups, argv, env, cwd created, pod files, joined namespaces, stop signal', async () => {
  const { spec, user, stopSignal, mounts } = await buildContainerSpec(
    containerInput({
      args: ['-c', 'id'],
      envs: [{ key: 'FOO', value: Buffer.from('2') }],
      linux: {
        resources: { cpuShares: 256n, memoryLimitInBytes: 8388608n, oomScoreAdj: -5n },
        securityContext: { noNewPrivs: true },
      },
      mounts: [{ containerPath: '/data', hostPath: join(dir, 'data'), readonly: true }],
    }),
  );
  const linux = spec.linux as OciLinux;
  assert.deepEqual(user, { uid: 1000, gid: 1000, additionalGids: [10, 1000], home: '/home/app' });
  assert.deepEqual(spec.process?.user, { uid: 1000, gid: 1000, additionalGids: [10, 1000] });
  assert.deepEqual(spec.process?.args, ['/bin/sh', '-c', 'id']);
  assert.ok(spec.process?.env?.includes('FOO=2'));
  assert.ok(spec.process?.env?.includes('HOSTNAME=web-0'));
  assert.ok(spec.process?.env?.includes('HOME=/home/app'));
  assert.equal(spec.process?.cwd, '/work');
  assert.ok((await stat(join(rootfs, 'work'))).isDirectory());
  assert.equal(spec.process?.noNewPrivileges, true);
  assert.equal(spec.process?.oomScoreAdj, 0); // -5 clamped
  assert.equal(stopSignal, 'SIGQUIT');
  assert.equal(spec.hostname, undefined);
  assert.deepEqual(linux.namespaces, [
    { type: 'mount' },
    { type: 'network', path: '/run/netns/sb1' },
    { type: 'uts', path: '/proc/42/ns/uts' },
    { type: 'ipc', path: '/proc/42/ns/ipc' },
    { type: 'pid' },
  ]);
  assert.equal(linux.cgroupsPath, '/kubepods/pod1/berth-c1');
  assert.deepEqual(linux.resources?.cpu, { shares: 256 });
  assert.deepEqual(linux.resources?.memory, { limit: 8388608, swap: 8388608 });
  assert.deepEqual(linux.resources?.devices?.[0], { allow: false, access: 'rwm' });
  assert.deepEqual(linux.maskedPaths, DEFAULT_MASKED_PATHS);
  assert.deepEqual(linux.readonlyPaths, DEFAULT_READONLY_PATHS);
  assert.equal(linux.seccomp, undefined); // no profile asked: unconfined
  const byDest = new Map(spec.mounts!.map((m) => [m.destination, m]));
  assert.deepEqual(byDest.get('/etc/hosts'), {
    destination: '/etc/hosts',
    type: 'bind',
    source: '/pods/sb1/hosts',
    options: ['rbind', 'rprivate', 'rw'],
  });
  assert.equal(byDest.get('/etc/resolv.conf')?.source, '/pods/sb1/resolv.conf');
  assert.equal(byDest.get('/etc/hostname')?.source, '/pods/sb1/hostname');
  assert.equal(byDest.get('/dev/shm')?.source, '/pods/sb1/shm');
  assert.deepEqual(byDest.get('/sys')?.options, ['nosuid', 'noexec', 'nodev', 'ro']);
  assert.deepEqual(mounts, [
    { destination: '/data', type: 'bind', source: join(dir, 'data'), options: ['rbind', 'rprivate', 'ro'] },
  ]);
  assert.equal(spec.annotations?.['io.kubernetes.cri.container-type'], 'container');
});

test('container spec: read-only rootfs makes the pod files read-only; config paths override defaults', async () => {
  const { spec } = await buildContainerSpec(
    containerInput({
      command: ['/bin/true'],
      linux: {
        securityContext: {
          readonlyRootfs: true,
          maskedPaths: ['/proc/secret'],
          readonlyPaths: ['/proc/ro'],
          runAsUser: { value: 0n },
        },
      },
    }),
  );
  const linux = spec.linux as OciLinux;
  assert.equal(spec.root?.readonly, true);
  assert.deepEqual(spec.mounts!.find((m) => m.destination === '/etc/hosts')?.options, [
    'rbind',
    'rprivate',
    'ro',
  ]);
  assert.deepEqual(linux.maskedPaths, ['/proc/secret']);
  assert.deepEqual(linux.readonlyPaths, ['/proc/ro']);
  assert.deepEqual(spec.process?.args, ['/bin/true']);
  assert.equal(spec.process?.user.uid, 0);
});

test('privileged: every host capability and device, no masked paths, writable sysfs; needs a privileged pod', async () => {
  await assert.rejects(
    buildContainerSpec(containerInput({ linux: { securityContext: { privileged: true } } })),
    (err: Error) => {
      assert.ok(err instanceof InvalidArgumentError);
      assert.match(err.message, /privileged container needs a privileged pod sandbox/);
      return true;
    },
  );
  const pod = podConfig({ linux: { securityContext: { privileged: true } } });
  const { spec } = await buildContainerSpec(
    containerInput(
      {
        linux: {
          securityContext: {
            privileged: true,
            seccomp: { profileType: SecurityProfile_ProfileType.RuntimeDefault, localhostRef: '' },
          },
        },
      },
      pod,
    ),
  );
  const linux = spec.linux as OciLinux;
  assert.deepEqual(spec.process?.capabilities?.bounding, HOST_CAPS);
  assert.equal(linux.maskedPaths, undefined);
  assert.equal(linux.readonlyPaths, undefined);
  assert.equal(linux.seccomp, undefined);
  assert.deepEqual(linux.resources?.devices, [{ allow: true, access: 'rwm' }]);
  assert.ok(
    linux.devices!.some((d) => d.path === '/dev/null' && d.type === 'c' && d.major === 1 && d.minor === 3),
  );
  assert.ok(!linux.devices!.some((d) => d.path.startsWith('/dev/pts/')));
  assert.deepEqual(spec.mounts!.find((m) => m.destination === '/sys')?.options, [
    'nosuid',
    'noexec',
    'nodev',
    'rw',
  ]);
});

test('devices: stat of the host node, permissions, errors', async () => {
  const { spec } = await buildContainerSpec(
    containerInput({ devices: [{ containerPath: '/dev/mynull', hostPath: '/dev/null', permissions: 'rw' }] }),
  );
  const linux = spec.linux as OciLinux;
  assert.deepEqual(
    linux.devices?.map(({ path, type, major, minor }) => ({ path, type, major, minor })),
    [{ path: '/dev/mynull', type: 'c', major: 1, minor: 3 }],
  );
  assert.deepEqual(linux.resources?.devices?.at(-1), {
    allow: true,
    type: 'c',
    major: 1,
    minor: 3,
    access: 'rw',
  });
  await assert.rejects(
    buildContainerSpec(
      containerInput({ devices: [{ containerPath: '/dev/x', hostPath: '/etc/hostname', permissions: 'r' }] }),
    ),
    /is not a device node/,
  );
  await assert.rejects(
    buildContainerSpec(
      containerInput({ devices: [{ containerPath: '/dev/x', hostPath: '/dev/null', permissions: 'rwx' }] }),
    ),
    /must be letters of "rwm"/,
  );
  await assert.rejects(
    buildContainerSpec(
      containerInput({ devices: [{ containerPath: 'dev/x', hostPath: '/dev/null', permissions: 'r' }] }),
    ),
    /not an absolute path/,
  );
});

test('namespaces: host network and IPC, shared and target PID, cgroup namespace on v2', async () => {
  const hostPod = podConfig({
    linux: {
      securityContext: {
        namespaceOptions: { network: NamespaceMode.NODE, ipc: NamespaceMode.NODE, pid: NamespaceMode.NODE },
      },
    },
  });
  const host = await buildContainerSpec(
    containerInput(
      {
        linux: {
          securityContext: {
            namespaceOptions: {
              network: NamespaceMode.NODE,
              ipc: NamespaceMode.NODE,
              pid: NamespaceMode.NODE,
            },
          },
        },
      },
      hostPod,
    ),
  );
  assert.deepEqual((host.spec.linux as OciLinux).namespaces, [{ type: 'mount' }]);
  assert.equal(host.spec.mounts!.find((m) => m.destination === '/dev/mqueue')?.type, 'mqueue');
  const shared = await buildContainerSpec(
    containerInput({ linux: { securityContext: { namespaceOptions: { pid: NamespaceMode.POD } } } }),
  );
  assert.deepEqual(
    (shared.spec.linux as OciLinux).namespaces.find((n) => n.type === 'pid'),
    { type: 'pid', path: '/proc/42/ns/pid' },
  );
  const targeted = await buildContainerSpec({
    ...containerInput({
      linux: { securityContext: { namespaceOptions: { pid: NamespaceMode.TARGET, targetId: 'other' } } },
    }),
    targetPidNamespace: '/proc/77/ns/pid',
  });
  assert.deepEqual(
    (targeted.spec.linux as OciLinux).namespaces.find((n) => n.type === 'pid'),
    { type: 'pid', path: '/proc/77/ns/pid' },
  );
  await assert.rejects(
    buildContainerSpec(
      containerInput({
        linux: { securityContext: { namespaceOptions: { pid: NamespaceMode.TARGET, targetId: 'x' } } },
      }),
    ),
    /TARGET without a target container/,
  );
  const noPid = {
    ...containerInput({ linux: { securityContext: { namespaceOptions: { pid: NamespaceMode.POD } } } }),
  };
  noPid.sandbox = facts(podConfig(), false);
  await assert.rejects(
    buildContainerSpec(noPid),
    (err: Error) => err instanceof FailedPreconditionError && /does not share one/.test(err.message),
  );
  const v2Input = containerInput({}, podConfig(), v2systemd);
  v2Input.sandbox = { ...v2Input.sandbox, cgroupParent: '' };
  const onV2 = await buildContainerSpec(v2Input);
  const linux = onV2.spec.linux as OciLinux;
  assert.ok(linux.namespaces.some((n) => n.type === 'cgroup'));
  assert.equal(linux.cgroupsPath, 'system.slice:berth:c1');
  assert.equal(onV2.spec.process?.oomScoreAdj, 0);
});

test('systemd cgroup parent of the pod gives a scope under the pod slice', async () => {
  const input = containerInput(
    { linux: { resources: { unified: { 'memory.high': '100000' } } } },
    podConfig(),
    v2systemd,
  );
  input.sandbox = { ...input.sandbox, cgroupParent: 'kubepods-burstable-pod1.slice' };
  const { spec } = await buildContainerSpec(input);
  const linux = spec.linux as OciLinux;
  assert.equal(linux.cgroupsPath, 'kubepods-burstable-pod1.slice:berth:c1');
  assert.deepEqual(linux.resources?.unified, { 'memory.high': '100000' });
  await assert.rejects(
    buildContainerSpec(containerInput({ linux: { resources: { unified: { 'memory.high': '1' } } } })),
    /need cgroup v2/,
  );
});

test('seccomp and AppArmor from the container security context', async () => {
  const { spec } = await buildContainerSpec(
    containerInput({
      linux: {
        securityContext: {
          seccomp: { profileType: SecurityProfile_ProfileType.RuntimeDefault, localhostRef: '' },
          apparmor: { profileType: SecurityProfile_ProfileType.RuntimeDefault, localhostRef: '' },
          capabilities: { addCapabilities: ['SYS_ADMIN'], dropCapabilities: [], addAmbientCapabilities: [] },
        },
      },
    }),
  );
  const seccomp = (spec.linux as OciLinux).seccomp!;
  assert.equal(seccomp.defaultAction, 'SCMP_ACT_ERRNO');
  // CAP_SYS_ADMIN was added, so mount is allowed by the default profile.
  assert.ok(seccomp.syscalls!.some((s) => s.names.includes('mount') && s.action === 'SCMP_ACT_ALLOW'));
  assert.equal(spec.process?.apparmorProfile, undefined);
  await assert.rejects(
    buildContainerSpec(
      containerInput({
        linux: {
          securityContext: {
            apparmor: { profileType: SecurityProfile_ProfileType.Localhost, localhostRef: 'k8s-deny' },
          },
        },
      }),
    ),
    (err: Error) =>
      err instanceof FailedPreconditionError &&
      /AppArmor profile "k8s-deny" asked for, but AppArmor is not available/.test(err.message),
  );
});

test('stop signal from the config wins over the image', async () => {
  const { stopSignal } = await buildContainerSpec(containerInput({ stopSignal: Signal.SIGUSR1 }));
  assert.equal(stopSignal, 'SIGUSR1');
});

test('the working directory is created inside the rootfs even through a symlink pointing out', async () => {
  const outside = join(dir, 'outside-target');
  await symlink(outside, join(rootfs, 'escape'));
  const { spec } = await buildContainerSpec(containerInput({ command: ['true'], workingDir: '/escape/wd' }));
  assert.equal(spec.process?.cwd, '/escape/wd');
  await assert.rejects(stat(outside), /ENOENT/);
  assert.ok((await stat(join(rootfs, dir, 'outside-target', 'wd'))).isDirectory());
});

test('bad mounts and users are InvalidArgument naming the container', async () => {
  await assert.rejects(
    buildContainerSpec(containerInput({ mounts: [{ containerPath: '/a/../etc', hostPath: dir }] })),
    (err: Error) => {
      assert.ok(err instanceof InvalidArgumentError);
      assert.match(
        err.message,
        /container "app" \(c1\) of pod sandbox sb1: mount container_path "\/a\/\.\.\/etc" contains a '\.\.' component/,
      );
      return true;
    },
  );
  await assert.rejects(
    buildContainerSpec(containerInput({ linux: { securityContext: { runAsUsername: 'nobody-here' } } })),
    InvalidArgumentError,
  );
});
