/**
 * A pod as its containers see it: hostname, DNS, hosts, the pod's network,
 * IPC (/dev/shm shared between containers) and, when asked, one PID namespace
 * with the infra as PID 1 — checked from inside busybox containers on runc.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readlink } from 'node:fs/promises';
import {
  ContainerState,
  DNSConfig,
  NamespaceMode,
  PodSandboxConfig,
  type ContainerConfig,
} from '../../src/generated/api.js';
import { containerConfig, execOk, podConfig, startEnv, waitForState, type Env } from './container-fixture.js';

let env: Env;

before(async () => {
  env = await startEnv('podin');
});

after(async () => {
  await env?.cleanup();
});

/** A pod with its own network (and PID namespace mode `pid`). */
function ownNetworkPod(name: string, pid: NamespaceMode): PodSandboxConfig {
  const base = podConfig(env.work, { hostNetwork: false, name });
  return PodSandboxConfig.fromPartial({
    ...base,
    dnsConfig: DNSConfig.fromPartial({
      servers: ['10.96.0.10', '10.96.0.11'],
      searches: ['ns1.svc.cluster.local', 'svc.cluster.local'],
      options: ['ndots:5', 'timeout:2'],
    }),
    linux: {
      ...base.linux,
      securityContext: {
        ...base.linux?.securityContext,
        namespaceOptions: { network: NamespaceMode.POD, pid, ipc: NamespaceMode.POD },
      },
    },
  });
}

function inPod(name: string, pid: NamespaceMode, command: string[]): ContainerConfig {
  return containerConfig(name, {
    command,
    linux: {
      securityContext: { namespaceOptions: { network: NamespaceMode.POD, pid, ipc: NamespaceMode.POD } },
    },
  });
}

async function startIn(podId: string, pod: PodSandboxConfig, config: ContainerConfig): Promise<string> {
  const rt = env.berth.cri.runtime;
  const { containerId } = await rt.createContainer({ podSandboxId: podId, config, sandboxConfig: pod });
  await rt.startContainer({ containerId });
  await waitForState(env.berth, containerId, (s) => s.state === ContainerState.CONTAINER_RUNNING);
  return containerId;
}

const exec = (id: string, cmd: string[]): Promise<string> => execOk(env.berth, id, cmd);

describe('inside a pod', () => {
  it('containers get the pod hostname, DNS, hosts and network, and share /dev/shm', async () => {
    const rt = env.berth.cri.runtime;
    const pod = ownNetworkPod('inside-a', NamespaceMode.CONTAINER);
    const { podSandboxId } = await rt.runPodSandbox({ config: pod, runtimeHandler: '' });
    const podStatus = (await rt.podSandboxStatus({ podSandboxId, verbose: true })).status!;
    const ip = podStatus.network!.ip;
    assert.match(ip, /^10\.\d+\.\d+\.\d+$/);

    const a = await startIn(podSandboxId, pod, inPod('a', NamespaceMode.CONTAINER, ['sleep', '1000']));
    const b = await startIn(podSandboxId, pod, inPod('b', NamespaceMode.CONTAINER, ['sleep', '1000']));

    // PodSandboxStatus carries the pod's containers (kubelet's Evented PLEG reads them).
    const withContainers = await rt.podSandboxStatus({ podSandboxId, verbose: false });
    assert.deepEqual(
      withContainers.containersStatuses.map((c) => [c.id, c.state]).sort(),
      [
        [a, ContainerState.CONTAINER_RUNNING],
        [b, ContainerState.CONTAINER_RUNNING],
      ].sort(),
    );
    assert.ok(withContainers.timestamp > 0n);
    assert.equal((await exec(a, ['hostname'])).trim(), 'inside-a');
    assert.equal((await exec(a, ['cat', '/etc/hostname'])).trim(), 'inside-a');
    const resolv = await exec(a, ['cat', '/etc/resolv.conf']);
    assert.match(resolv, /^search ns1\.svc\.cluster\.local svc\.cluster\.local$/m);
    assert.match(resolv, /^nameserver 10\.96\.0\.10$/m);
    assert.match(resolv, /^nameserver 10\.96\.0\.11$/m);
    assert.match(resolv, /^options ndots:5 timeout:2$/m);
    assert.match(
      await exec(a, ['cat', '/etc/hosts']),
      new RegExp(`^${ip.replace(/\./g, '\\.')}\\s+inside-a$`, 'm'),
    );
    // The pod's eth0 with the IP CNI gave it, seen from both containers.
    assert.match(
      await exec(a, ['ip', '-4', 'addr', 'show', 'eth0']),
      new RegExp(`inet ${ip.replace(/\./g, '\\.')}/`),
    );
    assert.match(
      await exec(b, ['ip', '-4', 'addr', 'show', 'eth0']),
      new RegExp(`inet ${ip.replace(/\./g, '\\.')}/`),
    );
    // One /dev/shm (the pod's tmpfs) for both.
    await exec(a, ['sh', '-c', 'echo shared-by-a > /dev/shm/marker']);
    assert.equal((await exec(b, ['cat', '/dev/shm/marker'])).trim(), 'shared-by-a');
    const shm = await exec(b, ['sh', '-c', "grep ' /dev/shm ' /proc/mounts"]);
    assert.match(shm, /tmpfs/);
    // Per-container PID namespaces here: each sees its own process as PID 1.
    assert.equal((await exec(a, ['cat', '/proc/1/cmdline'])).split('\0')[0], 'sleep');

    await rt.stopPodSandbox({ podSandboxId });
    for (const id of [a, b]) {
      const st = (await rt.containerStatus({ containerId: id, verbose: false })).status!;
      assert.equal(
        st.state,
        ContainerState.CONTAINER_EXITED,
        'stopping the pod stopped its containers first',
      );
    }
    await rt.removePodSandbox({ podSandboxId });
    const left = (await rt.listContainers({ filter: undefined })).containers.filter(
      (c) => c.podSandboxId === podSandboxId,
    );
    assert.deepEqual(left, [], 'removing the pod removed its containers');
  });

  it('with a shared PID namespace the infra is PID 1 and containers see each other', async () => {
    const rt = env.berth.cri.runtime;
    const pod = ownNetworkPod('inside-b', NamespaceMode.POD);
    const { podSandboxId } = await rt.runPodSandbox({ config: pod, runtimeHandler: '' });
    const info = JSON.parse((await rt.podSandboxStatus({ podSandboxId, verbose: true })).info.info) as {
      pid: number;
    };
    const a = await startIn(podSandboxId, pod, inPod('a', NamespaceMode.POD, ['sleep', '1001']));
    const b = await startIn(podSandboxId, pod, inPod('b', NamespaceMode.POD, ['sleep', '1002']));
    assert.equal((await exec(a, ['cat', '/proc/1/cmdline'])).split('\0')[0], '/catatonit');
    const ps = await exec(b, ['ps', '-o', 'args']);
    assert.match(ps, /sleep 1001/);
    assert.match(ps, /sleep 1002/);
    const st = (await rt.containerStatus({ containerId: a, verbose: true })).info;
    const pidOfA = (JSON.parse(st.info) as { pid: number }).pid;
    assert.ok(pidOfA > 0);
    assert.equal(await readlink(`/proc/${pidOfA}/ns/pid`), await readlink(`/proc/${info.pid}/ns/pid`));
    await rt.removePodSandbox({ podSandboxId });
  });
});
