/**
 * Pods without an infra container (runtime.drop_infra = true): berth pins the
 * pod's IPC and UTS namespaces itself, containers join them, and stop,
 * remove, a berth restart and a reboot treat them as they treat an infra's —
 * checked on runc from inside busybox containers and from the host.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, readdir, readlink, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ContainerState, NamespaceMode, PodSandboxConfig, PodSandboxState } from '../../src/generated/api.js';
import { startBerth } from '../helpers/berth-process.js';
import { run } from '../../src/util/run.js';
import {
  POD_NAMESPACES,
  containerConfig,
  execOk,
  killLeftovers,
  podConfig,
  startEnv,
  waitForState,
  type Env,
} from './container-fixture.js';

let env: Env;
const DROP_INFRA = '[runtime]\ndrop_infra = true\n';

before(async () => {
  env = await startEnv('noinfra', DROP_INFRA);
});

after(async () => {
  await env?.cleanup();
});

interface Info {
  pid: number;
  processStatus: string;
  infra: 'container' | 'dropped';
  pinnedNamespaces: { ipc?: string; uts?: string };
  netnsPath: string;
  podDir: string;
  runtime: { path: string; root: string };
}

function pod(
  name: string,
  pid = NamespaceMode.CONTAINER,
  sysctls: Record<string, string> = {},
  host: { network?: boolean; ipc?: boolean } = {},
): PodSandboxConfig {
  const base = podConfig(env.work, { hostNetwork: false, name });
  return PodSandboxConfig.fromPartial({
    ...base,
    linux: {
      ...base.linux,
      sysctls,
      securityContext: {
        ...base.linux?.securityContext,
        namespaceOptions: {
          network: host.network ? NamespaceMode.NODE : NamespaceMode.POD,
          pid,
          ipc: host.ipc ? NamespaceMode.NODE : NamespaceMode.POD,
        },
      },
    },
  });
}

async function info(podSandboxId: string): Promise<Info> {
  const res = await env.berth.cri.runtime.podSandboxStatus({ podSandboxId, verbose: true });
  return JSON.parse(res.info.info) as Info;
}

async function start(podSandboxId: string, config: PodSandboxConfig, name: string): Promise<string> {
  const rt = env.berth.cri.runtime;
  const { containerId } = await rt.createContainer({
    podSandboxId,
    config: containerConfig(name, {
      command: ['sleep', '1000'],
      linux: { securityContext: { namespaceOptions: POD_NAMESPACES } },
    }),
    sandboxConfig: config,
  });
  await rt.startContainer({ containerId });
  await waitForState(env.berth, containerId, (s) => s.state === ContainerState.CONTAINER_RUNNING);
  return containerId;
}

async function exec(id: string, cmd: string[]): Promise<string> {
  return (await execOk(env.berth, id, cmd)).trim();
}

async function mountPoints(): Promise<string[]> {
  return (await readFile('/proc/self/mountinfo', 'utf8')).split('\n').map((l) => l.split(' ')[4] ?? '');
}

/** Processes whose command line names `id` (a conmon names its container with --cid). */
async function processesNaming(id: string): Promise<string[]> {
  const found: string[] = [];
  for (const pid of await readdir('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
    if (cmdline.includes(id)) found.push(`${pid}: ${cmdline.replace(/\0/g, ' ')}`);
  }
  return found;
}

const nsOf = async (kind: string, file: string) => `${kind}:[${(await stat(file)).ino}]`;

describe('pods without an infra container', () => {
  it('pin the IPC and UTS namespaces their containers share, and release them on stop and remove', async () => {
    const rt = env.berth.cri.runtime;
    const config = pod('noinfra-a');
    const { podSandboxId } = await rt.runPodSandbox({ config, runtimeHandler: '' });
    const i = await info(podSandboxId);
    assert.equal(i.infra, 'dropped');
    assert.equal(i.pid, 0);
    assert.equal(i.processStatus, 'none');
    const { ipc, uts } = i.pinnedNamespaces;
    assert.ok(ipc && uts && i.netnsPath, JSON.stringify(i));
    assert.deepEqual(await processesNaming(podSandboxId), [], 'no conmon or pause for the pod');
    const runcList = await readdir(i.runtime.root).catch((): string[] => []);
    assert.ok(!runcList.includes(podSandboxId), 'the runtime has no container for the pod');
    const mounted = await mountPoints();
    for (const file of [ipc, uts]) assert.ok(mounted.includes(file), `${file} is a mount`);

    const a = await start(podSandboxId, config, 'a');
    const b = await start(podSandboxId, config, 'b');
    for (const id of [a, b]) {
      assert.equal(await exec(id, ['readlink', '/proc/self/ns/uts']), await nsOf('uts', uts));
      assert.equal(await exec(id, ['readlink', '/proc/self/ns/ipc']), await nsOf('ipc', ipc));
      assert.equal(await exec(id, ['readlink', '/proc/self/ns/net']), await nsOf('net', i.netnsPath));
      assert.equal(
        await exec(id, ['hostname']),
        'noinfra-a',
        'the pinned UTS namespace has the pod hostname',
      );
    }
    assert.notEqual(await nsOf('uts', uts), `uts:[${(await stat('/proc/self/ns/uts')).ino}]`);
    // The pod's network counters come through a container, there being no infra to read them.
    const stats = (await rt.listPodSandboxStats({ filter: { id: podSandboxId, labelSelector: {} } })).stats;
    assert.equal(stats[0]?.linux?.network?.defaultInterface?.name, 'eth0');

    await rt.stopPodSandbox({ podSandboxId });
    for (const id of [a, b]) {
      const st = (await rt.containerStatus({ containerId: id, verbose: false })).status!;
      assert.equal(st.state, ContainerState.CONTAINER_EXITED);
    }
    const stopped = (await rt.podSandboxStatus({ podSandboxId, verbose: false })).status!;
    assert.equal(stopped.state, PodSandboxState.SANDBOX_NOTREADY);
    const afterStop = await mountPoints();
    for (const file of [ipc, uts, i.netnsPath])
      assert.ok(!afterStop.includes(file), `${file} released on stop`);
    await rt.stopPodSandbox({ podSandboxId });

    await rt.removePodSandbox({ podSandboxId });
    await assert.rejects(stat(i.podDir), /ENOENT/);
    assert.ok(!(await mountPoints()).some((p) => p.startsWith(i.podDir)));
    await rt.removePodSandbox({ podSandboxId });
  });

  it("pin only what is the pod's own: with the host network no UTS, with host IPC no IPC", async () => {
    const rt = env.berth.cri.runtime;
    const hostNetPod = pod('noinfra-hostnet', NamespaceMode.CONTAINER, {}, { network: true });
    const hostNet = (await rt.runPodSandbox({ config: hostNetPod, runtimeHandler: '' })).podSandboxId;
    const h = await info(hostNet);
    assert.equal(h.infra, 'dropped');
    assert.equal(h.netnsPath, '');
    // The host's network comes with the host's UTS namespace (as with an infra).
    assert.equal(h.pinnedNamespaces.uts, undefined);
    assert.ok(h.pinnedNamespaces.ipc);
    assert.notEqual(await nsOf('ipc', h.pinnedNamespaces.ipc), await readlink('/proc/self/ns/ipc'));
    await rt.removePodSandbox({ podSandboxId: hostNet });
    await assert.rejects(stat(h.podDir), /ENOENT/);

    const hostIpcPod = pod('noinfra-hostipc', NamespaceMode.NODE, {}, { ipc: true });
    const hostIpc = (await rt.runPodSandbox({ config: hostIpcPod, runtimeHandler: '' })).podSandboxId;
    const p = await info(hostIpc);
    assert.equal(p.infra, 'dropped', 'the host PID namespace needs no pause either');
    assert.equal(p.pinnedNamespaces.ipc, undefined);
    assert.ok(p.pinnedNamespaces.uts);
    assert.notEqual(await nsOf('uts', p.pinnedNamespaces.uts), await readlink('/proc/self/ns/uts'));
    await rt.removePodSandbox({ podSandboxId: hostIpc });
  });

  it('keep the infra where a pod needs it: a shared PID namespace or sysctls', async () => {
    const rt = env.berth.cri.runtime;
    for (const config of [
      pod('noinfra-pidpod', NamespaceMode.POD),
      pod('noinfra-sysctl', NamespaceMode.CONTAINER, { 'net.ipv4.ip_unprivileged_port_start': '80' }),
    ]) {
      const { podSandboxId } = await rt.runPodSandbox({ config, runtimeHandler: '' });
      const i = await info(podSandboxId);
      assert.equal(i.infra, 'container', config.metadata!.name);
      assert.ok(i.pid > 0);
      assert.deepEqual(i.pinnedNamespaces, {});
      await rt.removePodSandbox({ podSandboxId });
    }
  });

  it('stay READY across a berth restart, and are NOTREADY and removable once a reboot took their namespaces', async () => {
    let rt = env.berth.cri.runtime;
    const config = pod('noinfra-restart');
    const { podSandboxId } = await rt.runPodSandbox({ config, runtimeHandler: '' });
    const ip = (await rt.podSandboxStatus({ podSandboxId, verbose: false })).status!.network!.ip;
    const a = await start(podSandboxId, config, 'survivor');

    await env.berth.kill();
    env.berth = await startBerth({ dir: env.berth.dir, toml: DROP_INFRA });
    rt = env.berth.cri.runtime;
    const kept = (await rt.podSandboxStatus({ podSandboxId, verbose: false })).status!;
    assert.equal(kept.state, PodSandboxState.SANDBOX_READY, 'its namespaces are still pinned');
    assert.equal(await exec(a, ['hostname']), 'noinfra-restart');
    // A new container still joins the pod's namespaces after the restart.
    const b = await start(podSandboxId, config, 'after-restart');
    assert.equal(
      await exec(b, ['readlink', '/proc/self/ns/uts']),
      await exec(a, ['readlink', '/proc/self/ns/uts']),
    );

    // The reboot: processes, mounts and the tmpfs run_root gone, records and IPAM kept.
    await env.berth.kill();
    await killLeftovers(env.berth.dir);
    await rm(join(env.berth.dir, 'run'), { recursive: true, force: true });
    env.berth = await startBerth({ dir: env.berth.dir, toml: DROP_INFRA });
    rt = env.berth.cri.runtime;
    const gone = (await rt.podSandboxStatus({ podSandboxId, verbose: false })).status!;
    assert.equal(gone.state, PodSandboxState.SANDBOX_NOTREADY);
    await rt.stopPodSandbox({ podSandboxId });
    await rt.removePodSandbox({ podSandboxId });
    const held = (await readdir(join(env.work, 'ipam'), { recursive: true })).some((f) =>
      f.endsWith(`/${ip}`),
    );
    assert.ok(!held, `the pod's address ${ip} is released`);
    const again = (await rt.runPodSandbox({ config, runtimeHandler: '' })).podSandboxId;
    assert.equal((await info(again)).infra, 'dropped');
    await rt.removePodSandbox({ podSandboxId: again });
  });

  it('a pod half-made when berth was killed in RunPodSandbox leaves no pinned namespace behind', async () => {
    // A CNI plugin that never answers holds RunPodSandbox once the namespaces are pinned.
    const sleep = `300.${parseInt(randomBytes(3).toString('hex'), 16)}`;
    const bin = join(env.work, 'slow-cni');
    await mkdir(bin, { recursive: true });
    await writeFile(
      join(bin, 'slow'),
      `#!/bin/sh\ncase "$CNI_COMMAND" in\nADD) exec sleep ${sleep} ;;\nVERSION) echo '{"cniVersion":"1.0.0","supportedVersions":["0.4.0","1.0.0"]}' ;;\nesac\nexit 0\n`,
      { mode: 0o755 },
    );
    const slowConf = join(env.berth.dir, 'cni', '00-slow.conflist');
    await writeFile(
      slowConf,
      JSON.stringify({ cniVersion: '1.0.0', name: 'slow', plugins: [{ type: 'slow' }] }),
    );
    const toml = `cni_bin_dirs = ["${bin}", "/usr/lib/cni"]\n${DROP_INFRA}`;
    await env.berth.stop();
    env.berth = await startBerth({ dir: env.berth.dir, toml });
    const sandboxes = join(env.berth.dir, 'root', 'sandboxes');
    const dirsBefore = await readdir(sandboxes).catch((): string[] => []);
    const config = pod('noinfra-halfmade');
    const pending = env.berth.cri.runtime
      .runPodSandbox({ config, runtimeHandler: '' })
      .catch(() => undefined);
    const deadline = Date.now() + 30_000;
    let pinned: string[] = [];
    while (Date.now() < deadline) {
      pinned = (await mountPoints()).filter((p) => p.startsWith(sandboxes) && /\/ns\/(ipc|uts)$/.test(p));
      const slow = await run('pgrep', ['-f', `^sleep ${sleep}$`]);
      if (pinned.length === 2 && slow.code === 0) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.equal(pinned.length, 2, 'RunPodSandbox pinned both namespaces and reached the CNI plugin');
    await env.berth.kill();
    await pending;
    for (const pid of (await run('pgrep', ['-f', `^sleep ${sleep}$`])).stdout.split('\n').filter(Boolean)) {
      process.kill(Number(pid), 'SIGKILL');
    }
    await rm(slowConf);
    env.berth = await startBerth({ dir: env.berth.dir, toml });
    // Start-up undid it: no pinned namespace, pod dir or pod; the name is free again.
    assert.deepEqual(
      (await mountPoints()).filter((p) => p.startsWith(sandboxes) && p.includes('/ns/')),
      [],
    );
    assert.deepEqual(await readdir(sandboxes).catch((): string[] => []), dirsBefore);
    const pods = (await env.berth.cri.runtime.listPodSandbox({ filter: undefined })).items;
    assert.ok(!pods.some((p) => p.metadata?.name === config.metadata!.name));
    const again = (await env.berth.cri.runtime.runPodSandbox({ config, runtimeHandler: '' })).podSandboxId;
    assert.equal((await info(again)).infra, 'dropped');
    await env.berth.cri.runtime.removePodSandbox({ podSandboxId: again });
  });
});
