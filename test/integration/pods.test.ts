/**
 * Pod sandboxes over the real socket: real runc/runsc/crun under real conmon,
 * the real CNI bridge plugin on a bridge and subnet unique to this run.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { access, mkdir, mkdtemp, readFile, readdir, readlink, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { connect, createServer } from 'node:net';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import { startBerth, type RunningBerth } from '../helpers/berth-process.js';
import {
  LinuxContainerResources,
  LinuxSandboxSecurityContext,
  NamespaceMode,
  PodSandboxFilter,
  PodSandboxState,
  Protocol,
  type PodSandboxConfig,
} from '../../src/generated/api.js';
import { run } from '../../src/util/run.js';

const TEST_RUN = randomBytes(3).toString('hex');
const BRIDGE = `bpod${TEST_RUN}`;
// 10.(150..199).(0..249).0/24: away from the deployed 10.88.0.0/16.
const SUBNET_PREFIX = `10.${150 + (parseInt(TEST_RUN.slice(0, 2), 16) % 50)}.${parseInt(TEST_RUN.slice(2, 4), 16) % 250}`;

/** A sleep only this run's fake plugin runs, so pgrep finds nothing else. */
const SLEEP = `300.${parseInt(TEST_RUN, 16)}`;

type GrpcErr = { code: number; details: string };
const grpcError =
  (code: number, pattern?: RegExp) =>
  (err: GrpcErr): boolean => {
    assert.equal(err.code, code, `expected gRPC code ${code}, got ${err.code}: ${err.details}`);
    if (pattern) assert.match(err.details, pattern);
    return true;
  };

function cniConfig(name: string, dataDir: string): string {
  return JSON.stringify({
    cniVersion: '1.0.0',
    name,
    plugins: [
      {
        type: 'bridge',
        bridge: BRIDGE,
        isGateway: true,
        ipMasq: false,
        ipam: {
          type: 'host-local',
          dataDir,
          routes: [{ dst: '0.0.0.0/0' }],
          ranges: [[{ subnet: `${SUBNET_PREFIX}.0/24` }]],
        },
      },
      { type: 'portmap', capabilities: { portMappings: true } },
      { type: 'loopback' },
    ],
  });
}

function handlersToml(dir: string): string {
  return `
[runtime]
default_handler = "runc"

[runtime.handlers.runc]
path = "/usr/sbin/runc"
root = "${join(dir, 'runc-a')}"

[runtime.handlers.runc-b]
path = "/usr/sbin/runc"
root = "${join(dir, 'runc-b')}"

[runtime.handlers.runsc]
path = "/usr/bin/runsc"
root = "${join(dir, 'runsc')}"
# Debian runsc cannot scrape a CNI netns on this kernel: host passthrough inside the pod netns.
runtime_args = ["--network=host"]

[runtime.handlers.crun]
path = "/usr/bin/crun"
root = "${join(dir, 'crun')}"
`;
}

let seq = 0;
function podConfig(
  overrides: Partial<PodSandboxConfig> = {},
  name = `pod-${TEST_RUN}-${++seq}`,
): PodSandboxConfig {
  return {
    metadata: { name, namespace: 'berth-test', uid: `uid-${name}`, attempt: 0 },
    hostname: name,
    logDirectory: '',
    dnsConfig: {
      servers: ['10.96.0.10'],
      searches: ['berth-test.svc.cluster.local', 'cluster.local'],
      options: ['ndots:5'],
    },
    portMappings: [],
    labels: { app: 'berth-test', run: TEST_RUN },
    annotations: { 'berth.test/annotation': 'kept' },
    linux: undefined,
    windows: undefined,
    ...overrides,
  };
}

async function exists(path: string): Promise<boolean> {
  try {
    await access(path);
    return true;
  } catch {
    return false;
  }
}

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** What a one-reply TCP server at host:port sends. */
function fetchTcp(host: string, port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, host);
    let data = '';
    socket.setTimeout(5000, () => socket.destroy(new Error(`timeout connecting to ${host}:${port}`)));
    socket.on('data', (c: Buffer) => (data += c.toString()));
    socket.on('end', () => resolve(data));
    socket.on('error', reject);
  });
}

/** argv of a process; `runc start` returns just before `runc init` execs the payload. */
async function cmdlineOf(pid: number): Promise<string[]> {
  const deadline = Date.now() + 5_000;
  for (;;) {
    const argv = (await readFile(`/proc/${pid}/cmdline`, 'utf8')).split('\0').filter(Boolean);
    // `runc init` shows up as ['runc', 'init'] and, while it re-executes, with no argv at all.
    if ((argv.length > 0 && argv[1] !== 'init') || Date.now() > deadline) return argv;
    await new Promise((r) => setTimeout(r, 10));
  }
}

async function mountedAt(path: string): Promise<boolean> {
  const info = await readFile('/proc/self/mountinfo', 'utf8');
  return info.split('\n').some((line) => line.split(' ')[4] === path);
}

interface Info {
  pid: number;
  processStatus: string;
  netnsPath: string;
  podDir: string;
  shmPath: string;
  image: string;
  runtimeHandler: string;
  runtime: { root: string };
  runtimeSpec: { process: { oomScoreAdj?: number; args: string[] }; linux: { cgroupsPath?: string } };
}

describe('pod sandboxes', { timeout: 600_000 }, () => {
  let dir: string;
  let berth: RunningBerth;
  const created: string[] = [];

  async function runPod(config: PodSandboxConfig, runtimeHandler = ''): Promise<string> {
    const { podSandboxId } = await berth.cri.runtime.runPodSandbox({ config, runtimeHandler });
    created.push(podSandboxId);
    return podSandboxId;
  }

  async function info(id: string): Promise<Info> {
    const res = await berth.cri.runtime.podSandboxStatus({ podSandboxId: id, verbose: true });
    return JSON.parse(res.info.info) as Info;
  }

  async function start(): Promise<void> {
    berth = await startBerth({ dir, toml: handlersToml(dir) });
  }

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'berth-pods-'));
    await mkdir(join(dir, 'cni'), { recursive: true });
    await writeFile(
      join(dir, 'cni', '10-pods.conflist'),
      cniConfig(`berth-pods-${TEST_RUN}`, join(dir, 'ipam')),
    );
    await start();
  });

  after(async () => {
    // Through CRI first (infra, CNI DEL, netns, mounts), then whatever is left.
    for (const id of created) {
      await berth.cri.runtime.removePodSandbox({ podSandboxId: id }).catch(() => undefined);
    }
    if (process.env.BERTH_TEST_LOGS) await writeFile(process.env.BERTH_TEST_LOGS, berth.logs());
    await berth.stop();
    await run('ip', ['link', 'del', BRIDGE]);
    for (const line of (await readFile('/proc/self/mountinfo', 'utf8')).split('\n')) {
      const point = line.split(' ')[4];
      if (point?.startsWith(dir)) await run('umount', ['-l', point]);
    }
    await rm(dir, { recursive: true, force: true });
  });

  it('runs, lists, reports, stops and removes a pod', async () => {
    const config = podConfig();
    const id = await runPod(config);
    assert.match(id, /^[0-9a-f]{64}$/);

    const { status: st } = await berth.cri.runtime.podSandboxStatus({ podSandboxId: id, verbose: false });
    assert.ok(st);
    assert.equal(st.id, id);
    assert.equal(st.state, PodSandboxState.SANDBOX_READY);
    assert.deepEqual(st.metadata, config.metadata);
    assert.deepEqual(st.labels, config.labels);
    assert.deepEqual(st.annotations, config.annotations);
    assert.equal(st.runtimeHandler, 'runc');
    assert.ok(st.createdAt > BigInt(Date.now() - 120_000) * 1_000_000n);
    assert.ok(
      st.network?.ip.startsWith(`${SUBNET_PREFIX}.`),
      `pod IP ${st.network?.ip} in ${SUBNET_PREFIX}.0/24`,
    );
    assert.equal(st.linux?.namespaces?.options?.network, NamespaceMode.POD);

    // The infra is berth's built-in catatonit pause, holding its own namespaces.
    const i = await info(id);
    assert.equal(i.processStatus, 'running');
    assert.equal(i.image, 'builtin');
    assert.deepEqual(await cmdlineOf(i.pid), ['/catatonit', '-P']);
    assert.notEqual(await readlink(`/proc/${i.pid}/ns/net`), await readlink('/proc/self/ns/net'));
    assert.notEqual(await readlink(`/proc/${i.pid}/ns/ipc`), await readlink('/proc/self/ns/ipc'));
    assert.notEqual(await readlink(`/proc/${i.pid}/ns/uts`), await readlink('/proc/self/ns/uts'));
    // Hostname and addresses as seen from inside the pod's namespaces.
    const uts = await run('nsenter', ['-t', String(i.pid), '--uts', 'hostname']);
    assert.equal(uts.stdout.trim(), config.hostname);
    const addr = await run('nsenter', [`--net=${i.netnsPath}`, 'ip', '-4', '-o', 'addr', 'show', 'eth0']);
    assert.match(addr.stdout, new RegExp(`inet ${st.network!.ip.replace(/\./g, '\\.')}/24`));
    // DNS config became the pod's resolv.conf; hosts names the pod IP.
    const resolv = await readFile(join(i.podDir, 'resolv.conf'), 'utf8');
    assert.match(resolv, /^nameserver 10\.96\.0\.10$/m);
    assert.match(resolv, /^search berth-test\.svc\.cluster\.local cluster\.local$/m);
    assert.match(resolv, /^options ndots:5$/m);
    assert.match(
      await readFile(join(i.podDir, 'hosts'), 'utf8'),
      new RegExp(`${st.network!.ip}\\s+${config.hostname}`),
    );
    // /dev/shm is a tmpfs of the pod's own, bind-mounted into the infra.
    assert.equal(await mountedAt(i.shmPath), true);
    const shmInside = (await readFile(`/proc/${i.pid}/mountinfo`, 'utf8'))
      .split('\n')
      .find((line) => line.split(' ')[4] === '/dev/shm');
    assert.match(shmInside ?? '', / - tmpfs shm /);
    // No CAP_SYS_RESOURCE here: -998 is clamped to berth's own score instead of failing.
    assert.equal(Number((await readFile(`/proc/${i.pid}/oom_score_adj`, 'utf8')).trim()), 0);

    // ListPodSandbox: every filter.
    const list = async (filter: {
      id?: string;
      state?: { state: PodSandboxState };
      labelSelector?: Record<string, string>;
    }) =>
      (
        await berth.cri.runtime.listPodSandbox({
          filter: PodSandboxFilter.fromPartial({
            id: filter.id,
            state: filter.state,
            labelSelector: filter.labelSelector,
          }),
        })
      ).items.map((p) => p.id);
    assert.ok((await list({})).includes(id));
    assert.deepEqual(await list({ id: id.slice(0, 12), labelSelector: {} }), [id]);
    assert.ok(
      (await list({ id: '', state: { state: PodSandboxState.SANDBOX_READY }, labelSelector: {} })).includes(
        id,
      ),
    );
    assert.ok(
      !(
        await list({ id: '', state: { state: PodSandboxState.SANDBOX_NOTREADY }, labelSelector: {} })
      ).includes(id),
    );
    assert.ok((await list({ id: '', labelSelector: { app: 'berth-test', run: TEST_RUN } })).includes(id));
    assert.deepEqual(await list({ id: '', labelSelector: { app: 'other' } }), []);
    assert.deepEqual(await list({ id: 'ffffffffffff', labelSelector: {} }), []);

    // Stop: infra gone, network torn down, shm unmounted, record kept.
    await berth.cri.runtime.stopPodSandbox({ podSandboxId: id });
    const stopped = await berth.cri.runtime.podSandboxStatus({ podSandboxId: id, verbose: false });
    assert.equal(stopped.status?.state, PodSandboxState.SANDBOX_NOTREADY);
    assert.equal(await exists(`/proc/${i.pid}`), false);
    assert.equal(await exists(i.netnsPath), false);
    assert.equal(await mountedAt(i.shmPath), false);
    assert.deepEqual(
      await list({
        id: '',
        state: { state: PodSandboxState.SANDBOX_NOTREADY },
        labelSelector: { run: TEST_RUN },
      }),
      [id],
    );
    // Idempotent, also for an ID berth never saw.
    await berth.cri.runtime.stopPodSandbox({ podSandboxId: id });
    await berth.cri.runtime.stopPodSandbox({ podSandboxId: 'f'.repeat(64) });

    // Remove: record, files and runtime state gone; again is fine.
    await berth.cri.runtime.removePodSandbox({ podSandboxId: id });
    assert.equal(await exists(i.podDir), false);
    assert.deepEqual(await list({ id, labelSelector: {} }), []);
    await assert.rejects(
      berth.cri.runtime.podSandboxStatus({ podSandboxId: id, verbose: false }),
      grpcError(status.NOT_FOUND, new RegExp(id)),
    );
    const runcList = await run('/usr/sbin/runc', ['--root', i.runtime.root, 'list', '-q']);
    assert.ok(!runcList.stdout.includes(id));
    await berth.cri.runtime.removePodSandbox({ podSandboxId: id });
    await berth.cri.runtime.removePodSandbox({ podSandboxId: 'f'.repeat(64) });
  });

  it('maps a hostPort to the pod through CNI portmap, and takes it away on stop', async () => {
    const hostPort = await freePort();
    const id = await runPod(
      podConfig({ portMappings: [{ protocol: Protocol.TCP, containerPort: 8081, hostPort, hostIp: '' }] }),
    );
    const i = await info(id);
    const script = `require('node:net').createServer((s) => s.end('hello from the pod')).listen(8081, '0.0.0.0', () => console.log('listening'));`;
    const server = spawn('nsenter', [`--net=${i.netnsPath}`, process.execPath, '-e', script], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    try {
      await new Promise<void>((resolve, reject) => {
        server.stdout.once('data', () => resolve());
        server.once('exit', (code) => reject(new Error(`server exited ${code}`)));
      });
      assert.equal(await fetchTcp('127.0.0.1', hostPort), 'hello from the pod');
    } finally {
      server.kill('SIGKILL');
    }
    await berth.cri.runtime.stopPodSandbox({ podSandboxId: id });
    const nat = await run('iptables-save', ['-t', 'nat']);
    assert.doesNotMatch(nat.stdout, new RegExp(`--dport ${hostPort}\\b`));
    await berth.cri.runtime.removePodSandbox({ podSandboxId: id });
  });

  it('removes a running pod in one call', async () => {
    const id = await runPod(podConfig());
    const i = await info(id);
    await berth.cri.runtime.removePodSandbox({ podSandboxId: id });
    assert.equal(await exists(i.netnsPath), false);
    assert.equal(await exists(i.podDir), false);
    assert.equal(await mountedAt(i.shmPath), false);
  });

  it('reports NOTREADY once the infra dies on its own, and still stops and removes the pod', async () => {
    const id = await runPod(podConfig());
    const i = await info(id);
    process.kill(i.pid, 'SIGKILL');
    const deadline = Date.now() + 10_000;
    let state: PodSandboxState | undefined;
    while (Date.now() < deadline) {
      state = (await berth.cri.runtime.podSandboxStatus({ podSandboxId: id, verbose: false })).status?.state;
      if (state === PodSandboxState.SANDBOX_NOTREADY) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.equal(state, PodSandboxState.SANDBOX_NOTREADY);
    // The network is still attached until kubelet stops the pod.
    assert.equal(await exists(i.netnsPath), true);
    await berth.cri.runtime.stopPodSandbox({ podSandboxId: id });
    assert.equal(await exists(i.netnsPath), false);
    await berth.cri.runtime.removePodSandbox({ podSandboxId: id });
    assert.equal(await exists(i.podDir), false);
  });

  it('runs a pod in the host network namespace', async () => {
    const id = await runPod(
      podConfig({
        linux: {
          cgroupParent: '',
          sysctls: {},
          overhead: undefined,
          resources: undefined,
          securityContext: LinuxSandboxSecurityContext.fromPartial({
            namespaceOptions: {
              network: NamespaceMode.NODE,
              pid: NamespaceMode.CONTAINER,
              ipc: NamespaceMode.POD,
              targetId: '',
              usernsOptions: undefined,
            },
          }),
        },
      }),
    );
    const { status: st } = await berth.cri.runtime.podSandboxStatus({ podSandboxId: id, verbose: false });
    assert.equal(st?.state, PodSandboxState.SANDBOX_READY);
    assert.equal(st?.network?.ip, '');
    assert.equal(st?.linux?.namespaces?.options?.network, NamespaceMode.NODE);
    const i = await info(id);
    assert.equal(i.netnsPath, '');
    assert.equal(await readlink(`/proc/${i.pid}/ns/net`), await readlink('/proc/self/ns/net'));
    // The host's network comes with the host's UTS (as in CRI-O and containerd).
    assert.equal(await readlink(`/proc/${i.pid}/ns/uts`), await readlink('/proc/self/ns/uts'));
    assert.notEqual(await readlink(`/proc/${i.pid}/ns/ipc`), await readlink('/proc/self/ns/ipc'));
    await berth.cri.runtime.removePodSandbox({ podSandboxId: id });
  });

  it('uses the host PID and IPC namespaces (and the host /dev/shm) when asked', async () => {
    const id = await runPod(
      podConfig({
        linux: {
          cgroupParent: '',
          sysctls: {},
          overhead: undefined,
          resources: undefined,
          securityContext: LinuxSandboxSecurityContext.fromPartial({
            namespaceOptions: {
              network: NamespaceMode.POD,
              pid: NamespaceMode.NODE,
              ipc: NamespaceMode.NODE,
            },
          }),
        },
      }),
    );
    const i = await info(id);
    assert.equal(await readlink(`/proc/${i.pid}/ns/pid`), await readlink('/proc/self/ns/pid'));
    assert.equal(await readlink(`/proc/${i.pid}/ns/ipc`), await readlink('/proc/self/ns/ipc'));
    assert.notEqual(await readlink(`/proc/${i.pid}/ns/net`), await readlink('/proc/self/ns/net'));
    assert.equal(i.shmPath, '/dev/shm');
    assert.equal(await exists(join(i.podDir, 'shm')), false);
    const { status: st } = await berth.cri.runtime.podSandboxStatus({ podSandboxId: id, verbose: false });
    assert.equal(st?.linux?.namespaces?.options?.pid, NamespaceMode.NODE);
    assert.equal(st?.linux?.namespaces?.options?.ipc, NamespaceMode.NODE);
    await berth.cri.runtime.removePodSandbox({ podSandboxId: id });
    // The host's /dev/shm is left alone.
    assert.equal(await mountedAt('/dev/shm'), true);
  });

  it('shares a PID namespace through the infra when the pod asks for it', async () => {
    const id = await runPod(
      podConfig({
        linux: {
          cgroupParent: '',
          sysctls: {},
          overhead: undefined,
          resources: undefined,
          securityContext: LinuxSandboxSecurityContext.fromPartial({
            namespaceOptions: {
              network: NamespaceMode.POD,
              pid: NamespaceMode.POD,
              ipc: NamespaceMode.POD,
              targetId: '',
              usernsOptions: undefined,
            },
          }),
        },
      }),
    );
    const i = await info(id);
    assert.notEqual(await readlink(`/proc/${i.pid}/ns/pid`), await readlink('/proc/self/ns/pid'));
    // catatonit is PID 1 of the pod's namespace.
    const nspid = (await readFile(`/proc/${i.pid}/status`, 'utf8'))
      .match(/^NSpid:\s*(.*)$/m)![1]
      .trim()
      .split(/\s+/);
    assert.equal(nspid.at(-1), '1');
    await berth.cri.runtime.removePodSandbox({ podSandboxId: id });
  });

  it('applies namespaced sysctls and refuses node-wide ones', async () => {
    const linux = (sysctls: Record<string, string>) => ({
      cgroupParent: '',
      sysctls,
      overhead: undefined,
      resources: undefined,
      securityContext: undefined,
    });
    const id = await runPod(
      podConfig({ linux: linux({ 'net.ipv4.ip_unprivileged_port_start': '42', 'kernel.shmmni': '1234' }) }),
    );
    const i = await info(id);
    const port = await run('nsenter', [
      `--net=${i.netnsPath}`,
      'cat',
      '/proc/sys/net/ipv4/ip_unprivileged_port_start',
    ]);
    assert.equal(port.stdout.trim(), '42');
    const shm = await run('nsenter', ['-t', String(i.pid), '--ipc', 'cat', '/proc/sys/kernel/shmmni']);
    assert.equal(shm.stdout.trim(), '1234');
    await berth.cri.runtime.removePodSandbox({ podSandboxId: id });

    const before = await readdir(join(dir, 'root', 'sandboxes')).catch(() => []);
    await assert.rejects(
      berth.cri.runtime.runPodSandbox({
        config: podConfig({ linux: linux({ 'kernel.panic': '1' }) }),
        runtimeHandler: '',
      }),
      grpcError(status.INVALID_ARGUMENT, /sysctl kernel\.panic is not namespaced/),
    );
    assert.deepEqual(await readdir(join(dir, 'root', 'sandboxes')).catch(() => []), before);
  });

  it('places the infra under the cgroup parent, in cgroupfs and systemd notation', async () => {
    const parent = `/berth-test-${TEST_RUN}`;
    const linux = (cgroupParent: string) => ({
      cgroupParent,
      sysctls: {},
      overhead: undefined,
      resources: undefined,
      securityContext: undefined,
    });
    const a = await runPod(podConfig({ linux: linux(parent) }));
    const ia = await info(a);
    assert.match(
      await readFile(`/proc/${ia.pid}/cgroup`, 'utf8'),
      new RegExp(`:memory:${parent}/berth-${a}`),
    );
    // kubelet with the systemd driver sends slices; with cgroupfs here they are expanded.
    const slice = `berthtest${TEST_RUN}-pod${seq}.slice`;
    const b = await runPod(podConfig({ linux: linux(slice) }));
    const ib = await info(b);
    assert.match(
      await readFile(`/proc/${ib.pid}/cgroup`, 'utf8'),
      new RegExp(`:memory:/berthtest${TEST_RUN}\\.slice/${slice.replace('.', '\\.')}/berth-${b}`),
    );
    await berth.cri.runtime.removePodSandbox({ podSandboxId: a });
    await berth.cri.runtime.removePodSandbox({ podSandboxId: b });
    for (const controller of await readdir('/sys/fs/cgroup')) {
      await run('rmdir', [join('/sys/fs/cgroup', controller, parent)]);
      await run('rmdir', [join('/sys/fs/cgroup', controller, `berthtest${TEST_RUN}.slice`, slice)]);
      await run('rmdir', [join('/sys/fs/cgroup', controller, `berthtest${TEST_RUN}.slice`)]);
    }
  });

  it('records pod resources and overhead on the infra; the pause itself gets the minimum CPU weight', async () => {
    const resources = LinuxContainerResources.fromPartial({
      cpuPeriod: 100000n,
      cpuQuota: 50000n,
      cpuShares: 512n,
      memoryLimitInBytes: 256n * 1024n * 1024n,
    });
    const overhead = LinuxContainerResources.fromPartial({
      cpuShares: 64n,
      memoryLimitInBytes: 32n * 1024n * 1024n,
    });
    const id = await runPod(
      podConfig({
        linux: { cgroupParent: '', sysctls: {}, overhead, resources, securityContext: undefined },
      }),
    );
    const i = await info(id);
    const annotations = (i.runtimeSpec as unknown as { annotations: Record<string, string> }).annotations;
    assert.equal(annotations['io.kubernetes.cri.sandbox-cpu-quota'], '50000');
    assert.equal(annotations['io.kubernetes.cri.sandbox-cpu-shares'], '512');
    assert.equal(annotations['io.kubernetes.cri.sandbox-memory'], String(256 * 1024 * 1024));
    assert.equal(annotations['io.kubernetes.cri.sandbox-overhead-cpu-shares'], '64');
    assert.equal(annotations['io.kubernetes.cri.sandbox-overhead-memory'], String(32 * 1024 * 1024));
    assert.equal(annotations['io.kubernetes.cri.container-type'], 'sandbox');
    assert.equal(annotations['berth.test/annotation'], 'kept');
    const cpuLine = (await readFile(`/proc/${i.pid}/cgroup`, 'utf8'))
      .split('\n')
      .find((l) => /^\d+:(cpu|cpu,cpuacct|cpuacct,cpu):/.test(l));
    assert.ok(cpuLine, 'the infra is in a cpu cgroup');
    const cpuPath = cpuLine.split(':').slice(2).join(':');
    assert.equal((await readFile(join('/sys/fs/cgroup/cpu', cpuPath, 'cpu.shares'), 'utf8')).trim(), '2');
    await berth.cri.runtime.removePodSandbox({ podSandboxId: id });
  });

  it('runs and removes pods concurrently, each with its own address', async () => {
    const configs = Array.from({ length: 8 }, () => podConfig());
    const ids = await Promise.all(configs.map((c) => runPod(c)));
    assert.equal(new Set(ids).size, ids.length);
    const statuses = await Promise.all(
      ids.map((id) => berth.cri.runtime.podSandboxStatus({ podSandboxId: id, verbose: false })),
    );
    const ips = statuses.map((s) => s.status!.network!.ip);
    assert.ok(statuses.every((s) => s.status!.state === PodSandboxState.SANDBOX_READY));
    assert.equal(new Set(ips).size, ips.length, `distinct IPs: ${ips.join(' ')}`);
    await Promise.all(ids.map((id) => berth.cri.runtime.removePodSandbox({ podSandboxId: id })));
    const left = (await berth.cri.runtime.listPodSandbox({ filter: undefined })).items.filter((p) =>
      ids.includes(p.id),
    );
    assert.deepEqual(left, []);
  });

  it('refuses an unknown handler and bad pod configs with INVALID_ARGUMENT, leaving nothing', async () => {
    const snapshot = async () => ({
      dirs: await readdir(join(dir, 'root', 'sandboxes')).catch(() => []),
      records: await readdir(join(dir, 'root', 'state', 'sandboxes')).catch(() => []),
      netns: await readdir(join(dir, 'run', 'netns')).catch(() => []),
      pods: (await berth.cri.runtime.listPodSandbox({ filter: undefined })).items.length,
    });
    const before = await snapshot();
    const bad = async (config: PodSandboxConfig, pattern: RegExp, runtimeHandler = '') =>
      assert.rejects(
        berth.cri.runtime.runPodSandbox({ config, runtimeHandler }),
        grpcError(status.INVALID_ARGUMENT, pattern),
      );
    await bad(
      podConfig(),
      /unknown runtime handler "kata"; configured handlers: crun, runc, runc-b, runsc/,
      'kata',
    );
    await bad(podConfig({ metadata: undefined }), /config\.metadata is missing/);
    const noUid = podConfig();
    await bad({ ...noUid, metadata: { ...noUid.metadata!, uid: '' } }, /metadata\.uid is empty/);
    await bad(
      podConfig({ hostname: 'not a hostname!' }),
      /hostname "not a hostname!" is not a valid host name/,
    );
    await bad(
      podConfig({ dnsConfig: { servers: ['not-an-ip'], searches: [], options: [] } }),
      /DNS server "not-an-ip" is not an IP address/,
    );
    await bad(
      podConfig({ portMappings: [{ protocol: 0, containerPort: 80, hostPort: 70000, hostIp: '' }] }),
      /ports must be between 1 and 65535/,
    );
    await bad(
      podConfig({
        linux: {
          cgroupParent: '/kubepods/../escape',
          sysctls: {},
          overhead: undefined,
          resources: undefined,
          securityContext: undefined,
        },
      }),
      /cgroup parent "\/kubepods\/\.\.\/escape" contains '\.\.'/,
    );
    await bad(
      podConfig({
        linux: {
          cgroupParent: '',
          sysctls: {},
          overhead: undefined,
          resources: undefined,
          securityContext: LinuxSandboxSecurityContext.fromPartial({
            namespaceOptions: {
              network: NamespaceMode.POD,
              pid: NamespaceMode.TARGET,
              ipc: NamespaceMode.POD,
            },
          }),
        },
      }),
      /PID namespace mode TARGET is only valid for containers/,
    );
    assert.deepEqual(await snapshot(), before);
  });

  it('answers a duplicate name with an error naming the holder', async () => {
    const config = podConfig();
    const id = await runPod(config);
    await assert.rejects(
      berth.cri.runtime.runPodSandbox({ config, runtimeHandler: '' }),
      grpcError(
        status.ALREADY_EXISTS,
        new RegExp(`k8s_POD_${config.metadata!.name}_berth-test_.*is already reserved for ${id}`),
      ),
    );
    // Another attempt is another name.
    const next = await runPod({ ...config, metadata: { ...config.metadata!, attempt: 1 } });
    await berth.cri.runtime.removePodSandbox({ podSandboxId: id });
    await berth.cri.runtime.removePodSandbox({ podSandboxId: next });
    // Removing the holder frees the name.
    const again = await runPod(config);
    await berth.cri.runtime.removePodSandbox({ podSandboxId: again });
  });

  it('runs pods on two handlers with different runtime roots', async () => {
    const a = await runPod(podConfig(), 'runc');
    const b = await runPod(podConfig(), 'runc-b');
    const ia = await info(a);
    const ib = await info(b);
    assert.equal(ia.runtime.root, join(dir, 'runc-a'));
    assert.equal(ib.runtime.root, join(dir, 'runc-b'));
    assert.equal(ib.runtimeHandler, 'runc-b');
    const listed = (await berth.cri.runtime.listPodSandbox({ filter: undefined })).items.find(
      (p) => p.id === b,
    );
    assert.equal(listed?.runtimeHandler, 'runc-b');
    const inB = await run('/usr/sbin/runc', ['--root', join(dir, 'runc-b'), 'list', '-q']);
    const inA = await run('/usr/sbin/runc', ['--root', join(dir, 'runc-a'), 'list', '-q']);
    assert.ok(inB.stdout.split('\n').includes(b));
    assert.ok(!inB.stdout.split('\n').includes(a));
    assert.ok(inA.stdout.split('\n').includes(a));
    await berth.cri.runtime.removePodSandbox({ podSandboxId: a });
    await berth.cri.runtime.removePodSandbox({ podSandboxId: b });
  });

  it('runs a pod on runsc (gVisor)', async () => {
    const id = await runPod(podConfig(), 'runsc');
    const { status: st } = await berth.cri.runtime.podSandboxStatus({ podSandboxId: id, verbose: false });
    assert.equal(st?.state, PodSandboxState.SANDBOX_READY);
    assert.equal(st?.runtimeHandler, 'runsc');
    const state = await run('/usr/bin/runsc', ['--root', join(dir, 'runsc'), 'state', id]);
    const runsc = JSON.parse(state.stdout) as { status: string; pid: number };
    assert.equal(runsc.status, 'running');
    // Debian's runsc (2023) mistakes any netns for the root one on this kernel, so the
    // handler runs with --network=host: the gVisor sandbox uses the pod's netns directly.
    const i = await info(id);
    assert.ok(st?.network?.ip.startsWith(`${SUBNET_PREFIX}.`));
    assert.equal(await readlink(`/proc/${runsc.pid}/ns/net`), `net:[${(await stat(i.netnsPath)).ino}]`);
    await berth.cri.runtime.stopPodSandbox({ podSandboxId: id });
    const stopped = await berth.cri.runtime.podSandboxStatus({ podSandboxId: id, verbose: false });
    assert.equal(stopped.status?.state, PodSandboxState.SANDBOX_NOTREADY);
    await berth.cri.runtime.removePodSandbox({ podSandboxId: id });
  });

  it('fails on crun with an error naming the handler and undoes every step', async () => {
    const netnsBefore = await readdir(join(dir, 'run', 'netns')).catch(() => []);
    const dirsBefore = await readdir(join(dir, 'root', 'sandboxes')).catch(() => []);
    const recordsBefore = await readdir(join(dir, 'root', 'state', 'sandboxes')).catch(() => []);
    const config = podConfig();
    await assert.rejects(
      berth.cri.runtime.runPodSandbox({ config, runtimeHandler: 'crun' }),
      grpcError(
        status.FAILED_PRECONDITION,
        /runtime handler "crun" \(\/usr\/bin\/crun\) failed to create container [0-9a-f]{64}: \S/,
      ),
    );
    const pods = (await berth.cri.runtime.listPodSandbox({ filter: undefined })).items;
    assert.ok(!pods.some((p) => p.metadata?.name === config.metadata!.name));
    assert.deepEqual(await readdir(join(dir, 'run', 'netns')).catch(() => []), netnsBefore);
    // Pod dir (with its /dev/shm mount), record and crun's state: all gone.
    assert.deepEqual(await readdir(join(dir, 'root', 'sandboxes')).catch(() => []), dirsBefore);
    assert.deepEqual(await readdir(join(dir, 'root', 'state', 'sandboxes')).catch(() => []), recordsBefore);
    const mounts = (await readFile('/proc/self/mountinfo', 'utf8'))
      .split('\n')
      .filter((l) => (l.split(' ')[4] ?? '').startsWith(join(dir, 'root', 'sandboxes')));
    assert.equal(mounts.length, dirsBefore.length, 'only the shm mounts of pods that still exist');
    assert.deepEqual(await readdir(join(dir, 'crun')).catch(() => []), []);
    // The IP went back to the pool and the name is free again.
    const ipam = await readdir(join(dir, 'ipam', `berth-pods-${TEST_RUN}`)).catch(() => []);
    const live = (await berth.cri.runtime.listPodSandbox({ filter: undefined })).items.filter(
      (p) => p.state === PodSandboxState.SANDBOX_READY,
    ).length;
    assert.equal(ipam.filter((f) => /^\d+\.\d+\.\d+\.\d+$/.test(f)).length, live);
    const id = await runPod(config, 'runc');
    await berth.cri.runtime.removePodSandbox({ podSandboxId: id });
  });

  it('a CNI failure while the infra is being made fails the pod cleanly; berth lives on', async () => {
    // A network that sorts first and fails without running a plugin: the earliest a CNI
    // ADD can fail, while the infra's files and mounts are still being made.
    const brokenConf = join(dir, 'cni', '00-broken.conflist');
    await writeFile(
      brokenConf,
      JSON.stringify({
        cniVersion: '1.0.0',
        name: `broken-${TEST_RUN}`,
        plugins: [{ type: 'no-such-plugin' }],
      }),
    );
    const netnsBefore = await readdir(join(dir, 'run', 'netns')).catch(() => []);
    const dirsBefore = await readdir(join(dir, 'root', 'sandboxes')).catch(() => []);
    try {
      const config = podConfig();
      await assert.rejects(
        berth.cri.runtime.runPodSandbox({ config, runtimeHandler: '' }),
        grpcError(status.UNKNOWN, /network "broken-.*CNI plugin "no-such-plugin" not found/),
      );
      const pods = (await berth.cri.runtime.listPodSandbox({ filter: undefined })).items;
      assert.ok(!pods.some((p) => p.metadata?.name === config.metadata!.name));
      assert.deepEqual(await readdir(join(dir, 'run', 'netns')).catch(() => []), netnsBefore);
      assert.deepEqual(await readdir(join(dir, 'root', 'sandboxes')).catch(() => []), dirsBefore);
    } finally {
      await rm(brokenConf, { force: true });
    }
    // Still serving: a pod on the good network runs.
    const id = await runPod(podConfig(), 'runc');
    await berth.cri.runtime.removePodSandbox({ podSandboxId: id });
  });

  it('after SIGKILL of berth shows the same pods and states, never re-creating them', async () => {
    const running = await runPod(podConfig());
    const stoppedPod = await runPod(podConfig());
    const dying = await runPod(podConfig());
    await berth.cri.runtime.stopPodSandbox({ podSandboxId: stoppedPod });
    const before = (await berth.cri.runtime.listPodSandbox({ filter: undefined })).items;
    const runningInfo = await info(running);
    const dyingInfo = await info(dying);

    await berth.kill();
    // While berth is down, one infra dies.
    process.kill(dyingInfo.pid, 'SIGKILL');
    await start();

    const after = (await berth.cri.runtime.listPodSandbox({ filter: undefined })).items;
    const byId = new Map(after.map((p) => [p.id, p]));
    for (const pod of before) {
      const now = byId.get(pod.id);
      assert.ok(now, `pod ${pod.id} is listed after the restart`);
      assert.equal(now.createdAt, pod.createdAt);
      assert.deepEqual(now.metadata, pod.metadata);
      if (pod.id !== dying) assert.equal(now.state, pod.state, `state of ${pod.id}`);
    }
    assert.equal(byId.get(dying)?.state, PodSandboxState.SANDBOX_NOTREADY);
    assert.equal(byId.get(stoppedPod)?.state, PodSandboxState.SANDBOX_NOTREADY);
    assert.equal(byId.get(running)?.state, PodSandboxState.SANDBOX_READY);
    // The same infra process: nothing was re-created.
    const again = await info(running);
    assert.equal(again.pid, runningInfo.pid);
    assert.deepEqual(await cmdlineOf(again.pid), ['/catatonit', '-P']);
    // Names survive too.
    const name = before.find((p) => p.id === running)!.metadata!;
    await assert.rejects(
      berth.cri.runtime.runPodSandbox({ config: podConfig({}, name.name), runtimeHandler: '' }),
      grpcError(status.ALREADY_EXISTS, new RegExp(running)),
    );
    // The restarted berth watches the infra again: its death is noticed.
    process.kill(again.pid, 'SIGKILL');
    const deadline = Date.now() + 10_000;
    let state: PodSandboxState | undefined;
    while (Date.now() < deadline) {
      state = (await berth.cri.runtime.podSandboxStatus({ podSandboxId: running, verbose: false })).status
        ?.state;
      if (state === PodSandboxState.SANDBOX_NOTREADY) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.equal(state, PodSandboxState.SANDBOX_NOTREADY);
    // And the restarted berth still stops and removes them.
    for (const id of [running, stoppedPod, dying])
      await berth.cri.runtime.removePodSandbox({ podSandboxId: id });
    assert.equal(await exists(runningInfo.netnsPath), false);
  });

  it('keeps track of an infra whose conmon died while berth was down', async () => {
    const id = await runPod(podConfig());
    const i = await info(id);
    const conmon = Number((await readFile(`/proc/${i.pid}/status`, 'utf8')).match(/^PPid:\s*(\d+)$/m)![1]);
    assert.match(await readFile(`/proc/${conmon}/comm`, 'utf8'), /^conmon/);
    await berth.kill();
    process.kill(conmon, 'SIGKILL');
    await start();
    const ready = await berth.cri.runtime.podSandboxStatus({ podSandboxId: id, verbose: false });
    assert.equal(ready.status?.state, PodSandboxState.SANDBOX_READY, 'the infra still runs');
    // No conmon will write its exit: berth asks the runtime instead.
    process.kill(i.pid, 'SIGKILL');
    const deadline = Date.now() + 15_000;
    let state: PodSandboxState | undefined;
    while (Date.now() < deadline) {
      state = (await berth.cri.runtime.podSandboxStatus({ podSandboxId: id, verbose: false })).status?.state;
      if (state === PodSandboxState.SANDBOX_NOTREADY) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.equal(state, PodSandboxState.SANDBOX_NOTREADY);
    const t0 = Date.now();
    await berth.cri.runtime.removePodSandbox({ podSandboxId: id });
    assert.ok(Date.now() - t0 < 5_000, 'removal does not wait for an exit file that never comes');
    assert.equal(await exists(i.podDir), false);
  });

  it('cleans a pod half-made when berth was killed in the middle of RunPodSandbox', async () => {
    // A CNI plugin that never answers holds RunPodSandbox between netns creation and the infra.
    const bin = join(dir, 'slow-cni');
    await mkdir(bin, { recursive: true });
    await writeFile(
      join(bin, 'slow'),
      `#!/bin/sh\ncase "$CNI_COMMAND" in\nADD) exec sleep ${SLEEP} ;;\nVERSION) echo '{"cniVersion":"1.0.0","supportedVersions":["0.4.0","1.0.0"]}' ;;\nesac\nexit 0\n`,
      { mode: 0o755 },
    );
    const slowConf = join(dir, 'cni', '00-slow.conflist');
    await writeFile(
      slowConf,
      JSON.stringify({ cniVersion: '1.0.0', name: `slow-${TEST_RUN}`, plugins: [{ type: 'slow' }] }),
    );
    await berth.stop();
    berth = await startBerth({
      dir,
      toml: `cni_bin_dirs = ["${bin}", "/usr/lib/cni"]\n${handlersToml(dir)}`,
    });
    const netnsBefore = new Set(await readdir(join(dir, 'run', 'netns')).catch(() => []));
    const dirsBefore = await readdir(join(dir, 'root', 'sandboxes')).catch(() => []);
    const recordsBefore = await readdir(join(dir, 'root', 'state', 'sandboxes')).catch(() => []);
    const config = podConfig();
    const pending = berth.cri.runtime.runPodSandbox({ config, runtimeHandler: '' }).catch(() => undefined);
    // Wait until the netns exists and the plugin runs.
    const deadline = Date.now() + 30_000;
    let netns: string[] = [];
    while (Date.now() < deadline) {
      netns = (await readdir(join(dir, 'run', 'netns')).catch(() => [])).filter((n) => !netnsBefore.has(n));
      const slow = await run('pgrep', ['-f', `^sleep ${SLEEP}$`]);
      if (netns.length > 0 && slow.code === 0) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.equal(netns.length, 1, 'RunPodSandbox reached the CNI plugin');
    await berth.kill();
    await pending;
    for (const pid of (await run('pgrep', ['-f', `^sleep ${SLEEP}$`])).stdout.split('\n').filter(Boolean)) {
      process.kill(Number(pid), 'SIGKILL');
    }
    await rm(slowConf);
    // The same plugin dirs: start-up repeats CNI DEL with the network ADD was given.
    berth = await startBerth({
      dir,
      toml: `cni_bin_dirs = ["${bin}", "/usr/lib/cni"]\n${handlersToml(dir)}`,
    });
    // Nothing of it is left: no pod, no netns, no pod dir, no record; the name is free.
    const pods = (await berth.cri.runtime.listPodSandbox({ filter: undefined })).items;
    assert.ok(!pods.some((p) => p.metadata?.name === config.metadata!.name));
    assert.deepEqual(await readdir(join(dir, 'run', 'netns')).catch(() => []), [...netnsBefore]);
    assert.deepEqual(await readdir(join(dir, 'root', 'sandboxes')).catch(() => []), dirsBefore);
    assert.deepEqual(await readdir(join(dir, 'root', 'state', 'sandboxes')).catch(() => []), recordsBefore);
    const id = await runPod(config);
    await berth.cri.runtime.removePodSandbox({ podSandboxId: id });
  });
});
