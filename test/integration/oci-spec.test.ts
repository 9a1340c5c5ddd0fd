/**
 * Specs from src/oci/spec run for real: an infra container made by
 * buildSandboxSpec (in its own netns) and workload containers made by
 * buildContainerSpec that join it, under conmon + runc. Each security and
 * resource setting is checked from inside the container.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readFile, readdir, readlink, rm, rmdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import {
  ContainerConfig,
  MountPropagation,
  NamespaceMode,
  PodSandboxConfig,
  SecurityProfile_ProfileType,
  type DeepPartial,
} from '../../src/generated/api.js';
import type { ImageConfigFile } from '../../src/image/types.js';
import { ConmonEngine } from '../../src/oci/engine.js';
import { silentLogger } from '../../src/log.js';
import { run, runChecked } from '../../src/util/run.js';
import {
  buildContainerSpec,
  buildSandboxSpec,
  detectSpecHost,
  type OciLinux,
  type SpecHost,
} from '../../src/oci/spec/index.js';
import { capabilitiesFromMask } from '../../src/oci/spec/host.js';
import { DEFAULT_CAPABILITIES } from '../../src/oci/spec/defaults.js';
import type { OciSpec, RuntimeHandler } from '../../src/oci/types.js';
import { makeBusyboxRootfs, runcHandler, testId } from '../helpers/oci-bundle.js';

let dir: string;
let engine: ConmonEngine;
let handler: RuntimeHandler;
let host: SpecHost;
let rootfs: string;
let pauseRootfs: string;
let shmPath: string;
/** The pod most tests run in (shares its PID namespace). */
let pod: Pod;
const netnsNames: string[] = [];
const cgParent = `/berth-spec-test-${process.pid}`;
const created: string[] = [];
const mounted: string[] = [];

const image: ImageConfigFile = {
  architecture: 'amd64',
  os: 'linux',
  config: { User: 'app', Cmd: ['sh'], Env: ['PATH=/bin', 'FROM_IMAGE=1'] },
  rootfs: { type: 'layers', diff_ids: [] },
};

/** Text a container wrote to stdout, from conmon's CRI log. */
async function logText(path: string): Promise<string> {
  let text = '';
  for (const line of (await readFile(path, 'utf8')).split('\n')) {
    // A tty's output carries \r\n line ends.
    const m = /^\S+ (stdout|stderr) ([PF]) (.*)$/.exec(line.replace(/\r$/, ''));
    if (m && m[1] === 'stdout') text += m[3] + (m[2] === 'F' ? '\n' : '');
  }
  return text;
}

interface Pod {
  id: string;
  pid: number;
  config: PodSandboxConfig;
  netnsPath: string;
}

/** Starts an infra container from buildSandboxSpec in a fresh netns. */
async function startPod(config: PodSandboxConfig): Promise<Pod> {
  const netnsName = `berth-spec-${randomBytes(4).toString('hex')}`;
  await runChecked('ip', ['netns', 'add', netnsName]);
  netnsNames.push(netnsName);
  const netnsPath = `/run/netns/${netnsName}`;
  const id = testId('infra');
  created.push(id);
  const spec = await buildSandboxSpec({
    id,
    config,
    rootfs: pauseRootfs,
    args: ['/bin/sleep', '3600'],
    hostname: 'spec-pod',
    netnsPath,
    shmPath,
    sysctls: config.linux?.sysctls ?? {},
    cgroupParent: cgParent,
    host,
  });
  const { pid } = await engine.create({
    id,
    handler,
    bundleDir: join(dir, 'bundles', id),
    spec,
    logPath: '',
    stdin: false,
    stdinOnce: false,
    tty: false,
  });
  await engine.start(id, handler);
  return { id, pid, config, netnsPath };
}

interface RunResult {
  exitCode: number;
  out: string;
  spec: OciSpec;
}

async function runContainer(
  config: DeepPartial<ContainerConfig>,
  options: {
    pod?: Pod;
    image?: ImageConfigFile;
    targetPidNamespace?: string;
    afterCreate?: (spec: OciSpec) => Promise<void>;
    afterStart?: () => Promise<void>;
  } = {},
): Promise<RunResult> {
  const id = testId('spec');
  created.push(id);
  const p = options.pod ?? pod;
  const { spec } = await buildContainerSpec({
    id,
    config: ContainerConfig.fromPartial({ metadata: { name: 'c', attempt: 0 }, ...config }),
    sandbox: {
      id: p.id,
      config: p.config,
      namespacePaths: {
        network: p.netnsPath,
        ipc: `/proc/${p.pid}/ns/ipc`,
        uts: `/proc/${p.pid}/ns/uts`,
        pid: `/proc/${p.pid}/ns/pid`,
      },
      hostsPath: join(dir, 'pod', 'hosts'),
      resolvConfPath: join(dir, 'pod', 'resolv.conf'),
      hostnamePath: join(dir, 'pod', 'hostname'),
      shmPath,
      cgroupParent: cgParent,
      hostname: 'spec-pod',
    },
    image: options.image ?? image,
    rootfs,
    handler,
    targetPidNamespace: options.targetPidNamespace,
    host,
  });
  const logPath = join(dir, 'logs', `${id}.log`);
  const tty = config.tty ?? false;
  await engine.create({
    id,
    handler,
    bundleDir: join(dir, 'bundles', id),
    spec,
    logPath,
    stdin: false,
    stdinOnce: false,
    tty,
  });
  await options.afterCreate?.(spec);
  const waiting = engine.waitExit(id);
  await engine.start(id, handler);
  await options.afterStart?.();
  const exit = await waiting;
  const out = await logText(logPath);
  await engine.delete(id, handler, true);
  return { exitCode: exit.exitCode, out, spec };
}

/** Runs `sh -c script` as the container's command. */
function sh(
  script: string,
  config: DeepPartial<ContainerConfig> = {},
  options: Parameters<typeof runContainer>[1] = {},
) {
  return runContainer({ command: ['sh', '-c', script], ...config }, options);
}

function statusField(out: string, field: string): string {
  const m = new RegExp(`^${field}:\\s*(.*)$`, 'm').exec(out);
  assert.ok(m, `${field} in ${out}`);
  return m[1].trim();
}

async function removeCgroups(path: string): Promise<void> {
  const remove = async (full: string): Promise<void> => {
    const entries = await readdir(full, { withFileTypes: true }).catch(() => []);
    for (const e of entries) if (e.isDirectory()) await remove(join(full, e.name));
    await rmdir(full).catch(() => undefined);
  };
  for (const hierarchy of await readdir('/sys/fs/cgroup').catch(() => [] as string[])) {
    await remove(join('/sys/fs/cgroup', hierarchy, path));
  }
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'berth-spec-'));
  rootfs = join(dir, 'rootfs');
  await makeBusyboxRootfs(rootfs, {
    'etc/passwd':
      'root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n',
    'etc/group': 'root:x:0:\napp:x:1000:\nvideo:x:44:app\nnobody:x:65534:\n',
  });
  pauseRootfs = join(dir, 'pause');
  await makeBusyboxRootfs(pauseRootfs);
  handler = runcHandler(dir);
  engine = new ConmonEngine({
    conmonPath: '/usr/bin/conmon',
    runRoot: join(dir, 'run'),
    exitDir: join(dir, 'run', 'exits'),
    cgroupDriver: 'cgroupfs',
    log: silentLogger,
  });
  host = await detectSpecHost({ restrictOomScoreAdj: 'auto', cgroupDriver: 'cgroupfs', log: silentLogger });

  shmPath = join(dir, 'shm');
  await mkdir(shmPath);
  await runChecked('mount', ['-t', 'tmpfs', '-o', 'mode=1777,size=1m,nosuid,nodev,noexec', 'shm', shmPath]);
  mounted.push(shmPath);
  await mkdir(join(dir, 'pod'));
  await writeFile(join(dir, 'pod', 'hostname'), 'spec-pod\n');
  await writeFile(join(dir, 'pod', 'hosts'), '127.0.0.1 localhost\n10.1.2.3 spec-pod\n');
  await writeFile(join(dir, 'pod', 'resolv.conf'), 'nameserver 10.0.0.10\nsearch spec.svc\n');

  pod = await startPod(
    PodSandboxConfig.fromPartial({
      metadata: { name: 'spec', namespace: 'default', uid: 'u1', attempt: 0 },
      hostname: 'spec-pod',
      linux: {
        cgroupParent: cgParent,
        sysctls: { 'net.ipv4.ip_unprivileged_port_start': '80' },
        securityContext: {
          namespaceOptions: { network: NamespaceMode.POD, ipc: NamespaceMode.POD, pid: NamespaceMode.POD },
          seccomp: { profileType: SecurityProfile_ProfileType.RuntimeDefault },
        },
      },
    }),
  );
});

after(async () => {
  for (const id of created) {
    await run(handler.path, [`--root=${handler.root}`, 'delete', '--force', id]).catch(() => undefined);
    const conmon = await engine.conmonPid(id).catch(() => 0);
    if (conmon > 0) {
      try {
        process.kill(conmon, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  }
  engine?.close();
  for (const m of mounted.reverse()) await run('umount', ['-l', m]);
  for (const name of netnsNames) await run('ip', ['netns', 'del', name]);
  await removeCgroups(cgParent);
  await rm(dir, { recursive: true, force: true });
});

describe('generated specs on runc + conmon', () => {
  it('the infra holds the pod: hostname, sysctl in its netns, read-only rootfs, clamped oom score, seccomp', async () => {
    const status = await readFile(`/proc/${pod.pid}/status`, 'utf8');
    assert.equal(statusField(status, 'Seccomp'), '2');
    assert.equal(statusField(status, 'NoNewPrivs'), '1');
    assert.equal(statusField(status, 'CapEff'), '0000000000000000');
    const own = Number((await readFile('/proc/self/oom_score_adj', 'utf8')).trim());
    assert.equal(
      Number((await readFile(`/proc/${pod.pid}/oom_score_adj`, 'utf8')).trim()),
      Math.max(-998, host.minOomScoreAdj),
    );
    assert.ok(host.minOomScoreAdj === -1000 || host.minOomScoreAdj === own);
    const r = await sh(
      'hostname; cat /proc/sys/net/ipv4/ip_unprivileged_port_start; ps -o pid,args | grep -c "sleep 3600"',
    );
    assert.equal(r.exitCode, 0, r.out);
    assert.deepEqual(r.out.trim().split('\n').slice(0, 2), ['spec-pod', '80']);
  });

  it('user from the image USER and /etc/group; run_as_user, run_as_group and supplemental groups', async () => {
    const fromImage = await runContainer({ command: ['id'] });
    assert.equal(fromImage.out.trim(), 'uid=1000(app) gid=1000(app) groups=44(video),1000(app)');
    const explicit = await runContainer({
      command: ['id'],
      linux: {
        securityContext: {
          runAsUser: { value: 65534n },
          runAsGroup: { value: 44n },
          supplementalGroups: [5000n],
        },
      },
    });
    assert.equal(explicit.out.trim(), 'uid=65534(nobody) gid=44(video) groups=44(video),5000');
    const root = await runContainer({
      command: ['id'],
      linux: { securityContext: { runAsUsername: 'root' } },
    });
    assert.equal(root.out.trim(), 'uid=0(root) gid=0(root) groups=0(root)');
  });

  it('default capabilities, no_new_privs and RuntimeDefault seccomp as /proc/self/status shows them', async () => {
    const r = await sh('cat /proc/self/status', {
      linux: {
        securityContext: {
          runAsUser: { value: 0n },
          noNewPrivs: true,
          seccomp: { profileType: SecurityProfile_ProfileType.RuntimeDefault },
        },
      },
    });
    assert.equal(r.exitCode, 0);
    assert.deepEqual(
      new Set(capabilitiesFromMask(statusField(r.out, 'CapEff'))),
      new Set(DEFAULT_CAPABILITIES),
    );
    assert.deepEqual(
      new Set(capabilitiesFromMask(statusField(r.out, 'CapBnd'))),
      new Set(DEFAULT_CAPABILITIES),
    );
    assert.equal(statusField(r.out, 'NoNewPrivs'), '1');
    assert.equal(statusField(r.out, 'Seccomp'), '2');
    const unconfined = await sh('cat /proc/self/status', {
      linux: { securityContext: { seccomp: { profileType: SecurityProfile_ProfileType.Unconfined } } },
    });
    assert.equal(statusField(unconfined.out, 'Seccomp'), '0');
    assert.equal(statusField(unconfined.out, 'NoNewPrivs'), '0');
  });

  it('RuntimeDefault blocks namespace creation without CAP_SYS_ADMIN; a Localhost profile applies', async () => {
    const blocked = await sh('unshare -U true && echo made-userns || echo refused', {
      linux: {
        securityContext: {
          runAsUser: { value: 0n },
          seccomp: { profileType: SecurityProfile_ProfileType.RuntimeDefault },
        },
      },
    });
    assert.equal(blocked.out.trim(), 'refused');
    const profile = join(dir, 'no-mkdir.json');
    await writeFile(
      profile,
      JSON.stringify({
        defaultAction: 'SCMP_ACT_ALLOW',
        syscalls: [{ names: ['mkdir', 'mkdirat'], action: 'SCMP_ACT_ERRNO', errnoRet: 1 }],
      }),
    );
    const local = await sh('mkdir /tmp/x 2>&1; echo rc=$?', {
      linux: {
        securityContext: {
          runAsUser: { value: 0n },
          seccomp: { profileType: SecurityProfile_ProfileType.Localhost, localhostRef: profile },
        },
      },
    });
    assert.match(local.out, /Operation not permitted/);
    assert.match(local.out, /rc=1/);
  });

  it('capabilities: drop ALL and add one; add ALL stays within the host', async () => {
    const one = await sh('grep CapEff /proc/self/status', {
      linux: {
        securityContext: {
          runAsUser: { value: 0n },
          capabilities: { dropCapabilities: ['ALL'], addCapabilities: ['net_bind_service'] },
        },
      },
    });
    assert.deepEqual(capabilitiesFromMask(statusField(one.out, 'CapEff')), ['CAP_NET_BIND_SERVICE']);
    const all = await sh('grep CapEff /proc/self/status', {
      linux: { securityContext: { runAsUser: { value: 0n }, capabilities: { addCapabilities: ['ALL'] } } },
    });
    assert.deepEqual(capabilitiesFromMask(statusField(all.out, 'CapEff')), host.boundingCapabilities);
  });

  it('read-only rootfs refuses writes; /dev/shm stays writable and is the pod’s', async () => {
    const r = await sh('touch /newfile 2>&1; echo rc=$?; echo hi > /dev/shm/ro-test && echo shm-ok', {
      linux: { securityContext: { readonlyRootfs: true, runAsUser: { value: 0n } } },
    });
    assert.match(r.out, /Read-only file system/);
    assert.match(r.out, /rc=1/);
    assert.match(r.out, /shm-ok/);
    assert.equal(await readFile(join(shmPath, 'ro-test'), 'utf8'), 'hi\n');
  });

  it('masked paths read empty, read-only paths refuse writes; privileged unmasks and gets host devices', async () => {
    // /proc/timer_list and /sys/firmware exist on this host (kcore does not).
    const r = await sh(
      'wc -c < /proc/timer_list; ls /sys/firmware | wc -l; echo 1 > /proc/sys/vm/drop_caches 2>&1; echo rc=$?',
      {
        linux: { securityContext: { runAsUser: { value: 0n } } },
      },
    );
    const lines = r.out.trim().split('\n');
    assert.equal(lines[0].trim(), '0', r.out);
    assert.equal(lines[1].trim(), '0');
    assert.equal(lines[2], 'rc=1', r.out);
    // A privileged container needs a privileged pod: its infra mounts sysfs read-write,
    // and sysfs mounts of one netns share that first mount's read-only flag.
    const privPod = await startPod(
      PodSandboxConfig.fromPartial({ linux: { securityContext: { privileged: true } } }),
    );
    const p = await sh(
      'grep CapEff /proc/self/status; ls /dev | grep -c . ; mount | grep " /sys type sysfs"; ls /sys/firmware | wc -l; wc -c < /proc/timer_list',
      {
        linux: { securityContext: { privileged: true, runAsUser: { value: 0n } } },
      },
      { pod: privPod },
    );
    assert.equal(p.exitCode, 0, p.out);
    assert.deepEqual(capabilitiesFromMask(statusField(p.out, 'CapEff')), host.boundingCapabilities);
    assert.match(p.out, /sysfs on \/sys type sysfs \(rw/);
    const hostDevs = (await readdir('/dev')).length;
    const devCount = Number(p.out.split('\n')[1]);
    assert.ok(
      devCount > 20 && devCount <= hostDevs + 5,
      `${devCount} devices inside, ${hostDevs} on the host`,
    );
    assert.ok((p.spec.linux as OciLinux).devices!.length > 10);
    const [firmware, timerList] = p.out.trim().split('\n').slice(-2).map(Number);
    assert.ok(firmware > 0 && timerList > 0, p.out);
  });

  it('memory and CPU limits land in the cgroup files (v1) seen from the host and inside; oom score', async () => {
    let cgroupsPath = '';
    const r = await sh(
      'cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/cpu/cpu.shares /sys/fs/cgroup/cpu/cpu.cfs_quota_us /proc/self/oom_score_adj',
      {
        linux: {
          resources: {
            memoryLimitInBytes: 64n * 1024n * 1024n,
            cpuShares: 256n,
            cpuQuota: 20000n,
            cpuPeriod: 100000n,
            oomScoreAdj: 500n,
          },
          securityContext: { runAsUser: { value: 0n } },
        },
      },
      {
        afterCreate: async (spec) => {
          cgroupsPath = (spec.linux as OciLinux).cgroupsPath!;
          if (host.cgroupVersion === 1) {
            assert.equal(
              (await readFile(`/sys/fs/cgroup/memory${cgroupsPath}/memory.limit_in_bytes`, 'utf8')).trim(),
              String(64 * 1024 * 1024),
            );
            assert.equal(
              (
                await readFile(`/sys/fs/cgroup/memory${cgroupsPath}/memory.memsw.limit_in_bytes`, 'utf8')
              ).trim(),
              String(64 * 1024 * 1024),
            );
            assert.equal(
              (await readFile(`/sys/fs/cgroup/cpu${cgroupsPath}/cpu.shares`, 'utf8')).trim(),
              '256',
            );
          } else {
            assert.equal(
              (await readFile(`/sys/fs/cgroup${cgroupsPath}/memory.max`, 'utf8')).trim(),
              String(64 * 1024 * 1024),
            );
          }
        },
      },
    );
    assert.ok(cgroupsPath.startsWith(`${cgParent}/berth-spec-`));
    if (host.cgroupVersion === 1) {
      assert.deepEqual(r.out.trim().split('\n'), [String(64 * 1024 * 1024), '256', '20000', '500']);
    }
    // A negative score below berth's own is clamped, not refused.
    const neg = await sh('cat /proc/self/oom_score_adj', { linux: { resources: { oomScoreAdj: -900n } } });
    assert.equal(Number(neg.out.trim()), Math.max(-900, host.minOomScoreAdj));
  });

  it('hostname, /etc/hosts, /etc/resolv.conf and env come from the pod and image; shared PID namespace shows the infra', async () => {
    const r = await sh(
      'hostname; cat /etc/hostname; grep spec-pod /etc/hosts; grep nameserver /etc/resolv.conf; echo $HOSTNAME $FROM_IMAGE $MINE; cat /proc/1/cmdline | tr "\\0" " "',
      {
        envs: [{ key: 'MINE', value: Buffer.from('yes') }],
        linux: {
          securityContext: {
            namespaceOptions: { network: NamespaceMode.POD, ipc: NamespaceMode.POD, pid: NamespaceMode.POD },
          },
        },
      },
    );
    assert.equal(r.exitCode, 0, r.out);
    assert.deepEqual(r.out.trim().split('\n'), [
      'spec-pod',
      'spec-pod',
      '10.1.2.3 spec-pod',
      'nameserver 10.0.0.10',
      'spec-pod 1 yes',
      '/bin/sleep 3600',
    ]);
    // Own PID namespace: the container is PID 1 of its own.
    const own = await sh('echo $$', {
      linux: { securityContext: { namespaceOptions: { pid: NamespaceMode.CONTAINER } } },
    });
    assert.equal(own.out.trim(), '1');
    // TARGET joins the named namespace (here the infra's).
    const target = await sh(
      'cat /proc/1/cmdline | tr "\\0" " "',
      {
        linux: { securityContext: { namespaceOptions: { pid: NamespaceMode.TARGET, targetId: pod.id } } },
      },
      { targetPidNamespace: `/proc/${pod.pid}/ns/pid` },
    );
    assert.equal(target.out.trim(), '/bin/sleep 3600');
  });

  it('bind mounts: read-only, recursive read-only over a submount, rslave sees later host mounts, devices', async () => {
    const src = join(dir, 'vol');
    await mkdir(join(src, 'sub'), { recursive: true });
    await runChecked('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'vol-sub', join(src, 'sub')]);
    mounted.push(join(src, 'sub'));
    const ro = await sh('touch /ro/sub/a 2>&1; echo ro-sub=$?; touch /ro/b 2>&1; echo ro-top=$?', {
      linux: { securityContext: { runAsUser: { value: 0n } } },
      mounts: [{ containerPath: '/ro', hostPath: src, readonly: true }],
    });
    // Plain ro protects only the top mount; the submount stays writable.
    assert.match(ro.out, /ro-sub=0/);
    assert.match(ro.out, /ro-top=1/);
    const rro = await sh('touch /rro/sub/c 2>&1; echo rro-sub=$?', {
      linux: { securityContext: { runAsUser: { value: 0n } } },
      mounts: [{ containerPath: '/rro', hostPath: src, readonly: true, recursiveReadOnly: true }],
    });
    assert.match(rro.out, /Read-only file system/);
    assert.match(rro.out, /rro-sub=1/);

    const shared = join(dir, 'shared');
    await mkdir(shared);
    await runChecked('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'shared-top', shared]);
    mounted.push(shared);
    await runChecked('mount', ['--make-shared', shared]);
    await mkdir(join(shared, 'later'));
    const later = join(shared, 'later');
    const slave = await sh(
      'i=0; while [ $i -lt 100 ]; do [ -f /p/later/marker ] && echo seen && exit 0; sleep 0.1; i=$((i+1)); done; echo missing; exit 1',
      {
        mounts: [
          {
            containerPath: '/p',
            hostPath: shared,
            propagation: MountPropagation.PROPAGATION_HOST_TO_CONTAINER,
          },
        ],
      },
      {
        afterStart: async () => {
          await runChecked('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'later', later]);
          mounted.push(later);
          await writeFile(join(later, 'marker'), 'x');
        },
      },
    );
    assert.equal(slave.out.trim(), 'seen');
    assert.equal((slave.spec.linux as OciLinux).rootfsPropagation, 'rslave');

    const dev = await sh('ls -l /dev/mynull | cut -c1; echo data > /dev/mynull && echo wrote', {
      devices: [{ containerPath: '/dev/mynull', hostPath: '/dev/null', permissions: 'rwm' }],
    });
    assert.deepEqual(dev.out.trim().split('\n'), ['c', 'wrote']);
  });

  it('a container in the host IPC namespace runs (the node need not have a /dev/mqueue)', async () => {
    const r = await sh('readlink /proc/self/ns/ipc; mount | grep -c " /dev/mqueue type mqueue"', {
      linux: {
        securityContext: {
          namespaceOptions: {
            network: NamespaceMode.POD,
            ipc: NamespaceMode.NODE,
            pid: NamespaceMode.CONTAINER,
          },
        },
      },
    });
    assert.equal(r.exitCode, 0, r.out);
    assert.deepEqual(r.out.trim().split('\n'), [await readlink('/proc/self/ns/ipc'), '1']);
  });

  it('a tty container gets a terminal', async () => {
    const r = await sh('[ -t 0 ] && [ -t 1 ] && echo is-a-tty', { tty: true });
    assert.match(r.out, /is-a-tty/);
    assert.equal(r.spec.process?.terminal, true);
  });
});
