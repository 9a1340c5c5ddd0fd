/**
 * CRI user namespaces on real runc + conmon: a pod in its own user namespace
 * (mode POD with ID mappings) whose containers see the image's root-owned
 * files as root and write to their root filesystem as root (the host sees
 * the mapped IDs); the host's user namespace (mode NODE); the refused asks;
 * and nothing left mounted afterwards.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { chmod, mkdtemp, readdir, readFile, readlink, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  NamespaceMode,
  PodSandboxConfig,
  type ContainerConfig,
  type DeepPartial,
  type IDMapping,
  type UserNamespace,
} from '../../src/generated/api.js';
import { run } from '../../src/util/run.js';
import { startBerth, type RunningBerth } from '../helpers/berth-process.js';
import { buildArtifact, writeDirectoryTar, writeOciLayout } from '../helpers/image-builder.js';
import {
  IMAGE,
  cleanupBerth,
  containerConfig,
  grpcCode,
  importArchive,
  importImages,
  podConfig,
  writeBridgeConflist,
} from './container-fixture.js';

const INVALID_ARGUMENT = 3;
const ARTIFACT = 'example.com/berth-test/artifact:1';
/** critest's mapping: container 0..99999 are host 1000..100999. */
const MAPPING: IDMapping[] = [{ containerId: 0, hostId: 1000, length: 100000 }];

let work: string;
let berth: RunningBerth;
let bridge: string;

before(async () => {
  // The runtime resolves root filesystems from inside the pod's user namespace:
  // berth's directories must be searchable by others (a plain mkdtemp is 0700).
  work = await mkdtemp(join(tmpdir(), 'berth-userns-'));
  await chmod(work, 0o711);
  bridge = `bu${randomBytes(4).toString('hex')}`;
  const dir = join(work, 'berth');
  await writeBridgeConflist(join(dir, 'cni'), bridge, join(work, 'ipam'), { mode: 0o711 });
  berth = await startBerth({ dir });
  await importImages(berth.configFile, work);
});

after(async () => {
  if (berth) await cleanupBerth(berth);
  await run('/usr/sbin/ip', ['link', 'del', bridge]).catch(() => undefined);
  if (work) await rm(work, { recursive: true, force: true });
});

function usernsPod(userns: DeepPartial<UserNamespace> | undefined, name?: string): PodSandboxConfig {
  const base = podConfig(work, { hostNetwork: false, name });
  return PodSandboxConfig.fromPartial({
    ...base,
    linux: {
      securityContext: {
        namespaceOptions: {
          network: NamespaceMode.POD,
          ipc: NamespaceMode.POD,
          pid: NamespaceMode.CONTAINER,
          usernsOptions: userns,
        },
      },
    },
  });
}

/** A container as kubelet sends it: the pod's namespace options, user namespace included. */
function inPod(
  pod: PodSandboxConfig,
  name: string,
  partial: DeepPartial<ContainerConfig> = {},
): ContainerConfig {
  return containerConfig(name, {
    command: ['sleep', '3600'],
    ...partial,
    linux: {
      ...partial.linux,
      securityContext: {
        ...partial.linux?.securityContext,
        namespaceOptions: pod.linux?.securityContext?.namespaceOptions,
      },
    },
  });
}

async function exec(containerId: string, cmd: string[]): Promise<string> {
  const res = await berth.cri.runtime.execSync({ containerId, cmd, timeout: 20n });
  assert.equal(res.exitCode, 0, `${cmd.join(' ')}: ${res.stderr.toString()}`);
  return res.stdout.toString();
}

async function mountsMentioning(...needles: string[]): Promise<string[]> {
  const info = await readFile('/proc/self/mountinfo', 'utf8');
  return info.split('\n').filter((line) => needles.some((n) => line.includes(n)));
}

const words = (text: string) => text.trim().split(/\s+/);

describe('user namespaces', () => {
  it('Status reports user namespaces for the runc handlers', async () => {
    const res = await berth.cri.runtime.status({ verbose: false });
    const byName = new Map(res.runtimeHandlers.map((h) => [h.name, h.features?.userNamespaces]));
    assert.equal(byName.get(''), true, JSON.stringify(res.runtimeHandlers));
    assert.equal(byName.get('runc'), true);
  });

  it('a POD user namespace: mapped IDs, root owns the rootfs and writes to it, the host sees the mapped owner', async () => {
    const rt = berth.cri.runtime;
    const pod = usernsPod({ mode: NamespaceMode.POD, uids: MAPPING, gids: MAPPING });
    const { podSandboxId } = await rt.runPodSandbox({ config: pod, runtimeHandler: '' });
    const podStatus = (await rt.podSandboxStatus({ podSandboxId, verbose: false })).status!;
    assert.match(podStatus.network?.ip ?? '', /^10\./, 'CNI gave the pod an address in its own netns');

    const { containerId } = await rt.createContainer({
      podSandboxId,
      config: inPod(pod, 'app'),
      sandboxConfig: pod,
    });
    await rt.startContainer({ containerId });

    assert.deepEqual(words(await exec(containerId, ['cat', '/proc/self/uid_map'])), ['0', '1000', '100000']);
    assert.deepEqual(words(await exec(containerId, ['cat', '/proc/self/gid_map'])), ['0', '1000', '100000']);
    assert.equal((await exec(containerId, ['id', '-u'])).trim(), '0');
    // The image's root-owned files are root's inside.
    assert.deepEqual(words(await exec(containerId, ['stat', '-c', '%u %g', '/bin', '/etc/passwd'])), [
      '0',
      '0',
      '0',
      '0',
    ]);
    // Root writes to / and into an image directory (copy-up).
    await exec(containerId, ['sh', '-c', 'echo hi > /made-by-root && mkdir /newdir && touch /bin/added']);
    assert.deepEqual(words(await exec(containerId, ['stat', '-c', '%u', '/made-by-root', '/bin/added'])), [
      '0',
      '0',
    ]);
    // The pod's network namespace belongs to its user namespace: sysfs shows the pod's interfaces.
    assert.match(await exec(containerId, ['ls', '/sys/class/net']), /eth0/);

    const upper = join(berth.dir, 'root', 'containers', containerId, 'upper');
    for (const file of ['made-by-root', 'newdir', 'bin/added']) {
      const st = await stat(join(upper, file));
      assert.deepEqual([st.uid, st.gid], [1000, 1000], `${file} in the upper dir belongs to host ID 1000`);
    }
    // Only the overlay stays mounted: the ID-mapped layer clones went once it held them.
    const mounts = await mountsMentioning(containerId);
    assert.equal(mounts.length, 1, mounts.join('\n'));
    assert.match(mounts[0], / overlay /);

    // The pause process runs in the same user namespace.
    const verbose = (await rt.podSandboxStatus({ podSandboxId, verbose: true })).info;
    const infraPid = Number((JSON.parse(verbose.info) as { pid: number }).pid);
    assert.ok(infraPid > 0, verbose.info);
    assert.deepEqual(words(await readFile(`/proc/${infraPid}/uid_map`, 'utf8')), ['0', '1000', '100000']);

    await rt.stopPodSandbox({ podSandboxId });
    await rt.removePodSandbox({ podSandboxId });
    assert.deepEqual(await mountsMentioning(containerId, podSandboxId), []);
    await assert.rejects(stat(join(berth.dir, 'root', 'containers', containerId)), /ENOENT/);
    await assert.rejects(stat(join(berth.dir, 'root', 'sandboxes', podSandboxId)), /ENOENT/);
  });

  it("an image volume in a POD user namespace: its root-owned files are the pod root's, read-only", async () => {
    const rt = berth.cri.runtime;
    // An OCI artifact's files too (imported from an OCI layout, as on an air-gapped node).
    const layout = join(work, 'artifact-layout');
    await writeOciLayout(layout, [
      {
        tag: ARTIFACT,
        image: buildArtifact([{ name: 'data/readme.txt', content: 'mapped\n' }], 'application/vnd.example'),
      },
    ]);
    await writeDirectoryTar(layout, `${layout}.tar`);
    await importArchive(berth.configFile, `${layout}.tar`);
    const pod = usernsPod({ mode: NamespaceMode.POD, uids: MAPPING, gids: MAPPING });
    const { podSandboxId } = await rt.runPodSandbox({ config: pod, runtimeHandler: '' });
    const { containerId } = await rt.createContainer({
      podSandboxId,
      config: inPod(pod, 'vol', {
        mounts: [
          {
            containerPath: '/vol',
            hostPath: '',
            readonly: true,
            image: { image: IMAGE },
            imageSubPath: 'bin',
          },
          { containerPath: '/art', hostPath: '', readonly: true, image: { image: ARTIFACT } },
        ],
      }),
      sandboxConfig: pod,
    });
    await rt.startContainer({ containerId });
    // Without the ID mapping they would show as the overflow ID (65534).
    assert.deepEqual(words(await exec(containerId, ['stat', '-c', '%u %g', '/vol/busybox'])), ['0', '0']);
    assert.deepEqual(words(await exec(containerId, ['stat', '-c', '%u %g %a', '/art/data/readme.txt'])), [
      '0',
      '0',
      '444',
    ]);
    assert.equal(await exec(containerId, ['cat', '/art/data/readme.txt']), 'mapped\n');
    const write = await rt.execSync({ containerId, cmd: ['touch', '/vol/new'], timeout: 10n });
    assert.notEqual(write.exitCode, 0);
    // The mapped clones of the layers went once the overlay held them: the volume's overlay,
    // and the container's root, stay mounted.
    const mounts = await mountsMentioning(containerId);
    assert.equal(mounts.filter((m) => m.includes('/idmap/')).length, 0, mounts.join('\n'));
    assert.equal(mounts.filter((m) => m.includes('/image-volumes/')).length, 2, mounts.join('\n'));
    await rt.stopPodSandbox({ podSandboxId });
    await rt.removePodSandbox({ podSandboxId });
    assert.deepEqual(await mountsMentioning(containerId), []);
  });

  it('a container whose user is outside the mapping is refused, and leaves nothing behind', async () => {
    const rt = berth.cri.runtime;
    const small: IDMapping[] = [{ containerId: 0, hostId: 300000, length: 1000 }];
    const pod = usernsPod({ mode: NamespaceMode.POD, uids: small, gids: small });
    const { podSandboxId } = await rt.runPodSandbox({ config: pod, runtimeHandler: '' });
    try {
      const before = await readdir(join(berth.dir, 'root', 'containers')).catch(() => []);
      await assert.rejects(
        rt.createContainer({
          podSandboxId,
          config: inPod(pod, 'outside', { linux: { securityContext: { runAsUser: { value: 5000n } } } }),
          sandboxConfig: pod,
        }),
        grpcCode(INVALID_ARGUMENT, /user 5000 is not mapped in the pod's user namespace/),
      );
      assert.deepEqual(await readdir(join(berth.dir, 'root', 'containers')).catch(() => []), before);
      // And one inside the mapping runs, as that user.
      const { containerId } = await rt.createContainer({
        podSandboxId,
        config: inPod(pod, 'inside', { linux: { securityContext: { runAsUser: { value: 999n } } } }),
        sandboxConfig: pod,
      });
      await rt.startContainer({ containerId });
      assert.equal((await exec(containerId, ['id', '-u'])).trim(), '999');
    } finally {
      await rt.stopPodSandbox({ podSandboxId });
      await rt.removePodSandbox({ podSandboxId });
    }
    assert.deepEqual(await mountsMentioning(podSandboxId), []);
  });

  it("mode NODE: the container has the host's user namespace", async () => {
    const rt = berth.cri.runtime;
    const pod = usernsPod({ mode: NamespaceMode.NODE });
    const { podSandboxId } = await rt.runPodSandbox({ config: pod, runtimeHandler: '' });
    try {
      const { containerId } = await rt.createContainer({
        podSandboxId,
        config: inPod(pod, 'host-userns'),
        sandboxConfig: pod,
      });
      await rt.startContainer({ containerId });
      const host = words(await readFile('/proc/self/uid_map', 'utf8'));
      assert.deepEqual(words(await exec(containerId, ['cat', '/proc/self/uid_map'])), host);
      assert.equal(
        (await exec(containerId, ['readlink', '/proc/self/ns/user'])).trim(),
        await readlink('/proc/self/ns/user'),
      );
    } finally {
      await rt.stopPodSandbox({ podSandboxId });
      await rt.removePodSandbox({ podSandboxId });
    }
  });

  it('refused: more than one mapping, container ID 0 unmapped, modes CONTAINER and TARGET — nothing half-made', async () => {
    const rt = berth.cri.runtime;
    const sandboxesDir = join(berth.dir, 'root', 'sandboxes');
    const netnsDir = join(berth.dir, 'run', 'netns');
    const podsBefore = await readdir(sandboxesDir).catch(() => []);
    const netnsBefore = await readdir(netnsDir).catch(() => []);
    const cases: [string, DeepPartial<UserNamespace>, RegExp][] = [
      [
        'two mappings',
        {
          mode: NamespaceMode.POD,
          uids: [...MAPPING, { containerId: 0, hostId: 2000, length: 100000 }],
          gids: [...MAPPING, { containerId: 0, hostId: 2000, length: 100000 }],
        },
        /exactly one uid mapping, but 2 were given/,
      ],
      [
        'root unmapped',
        {
          mode: NamespaceMode.POD,
          uids: [{ containerId: 1, hostId: 1000, length: 100000 }],
          gids: [{ containerId: 1, hostId: 1000, length: 100000 }],
        },
        /must map container ID 0 \(root\)/,
      ],
      ['CONTAINER', { mode: NamespaceMode.CONTAINER }, /mode CONTAINER is not supported/],
      ['TARGET', { mode: NamespaceMode.TARGET }, /mode TARGET is not supported/],
    ];
    for (const [label, userns, pattern] of cases) {
      const name = `refused-${label.replace(/\W+/g, '-')}-${process.pid}`;
      await assert.rejects(
        rt.runPodSandbox({ config: usernsPod(userns, name), runtimeHandler: '' }),
        grpcCode(INVALID_ARGUMENT, pattern),
        label,
      );
      const { items } = await rt.listPodSandbox({ filter: undefined });
      assert.ok(!items.some((p) => p.metadata?.name === name), `${label}: no pod listed`);
      // The name is free again: the same pod without a user namespace runs.
      const { podSandboxId } = await rt.runPodSandbox({
        config: usernsPod(undefined, name),
        runtimeHandler: '',
      });
      await rt.stopPodSandbox({ podSandboxId });
      await rt.removePodSandbox({ podSandboxId });
    }
    assert.deepEqual(await readdir(sandboxesDir).catch(() => []), podsBefore);
    assert.deepEqual(await readdir(netnsDir).catch(() => []), netnsBefore);
  });
});

describe('the self-test at start-up', () => {
  it('SIGTERM while it runs: berth exits only after unmounting and removing its scratch dir', async () => {
    // Searchable, as in before(): otherwise the test stops before it mounts anything.
    const dir = await mkdtemp(join(work, 'early-stop-'));
    await chmod(dir, 0o711);
    const root = join(dir, 'root');
    // The self-test starts as the daemon starts serving and takes a few hundred
    // ms of helper processes and mounts: a stop right away lands inside it.
    for (let round = 1; round <= 3; round++) {
      const early = await startBerth({ dir });
      assert.equal(await early.stop(), 0, early.logs());
      const scratch = (await readdir(root)).filter((n) => n.startsWith('.userns-check-'));
      assert.deepEqual(scratch, [], `round ${round}: scratch dir left in ${root}`);
      assert.deepEqual(await mountsMentioning(dir), [], `round ${round}: mounts left under ${dir}`);
    }
  });
});
