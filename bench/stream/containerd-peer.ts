/**
 * containerd (Debian's 1.6) as bench/stream's peer: one pod with a running
 * busybox container, and the same sink and source servers inside the pod's
 * network namespace as berth's side has. Exec and PortForward URLs come from
 * containerd's own CRI RPCs, so its streaming server (the Kubernetes library
 * CRI-O uses too) serves the same clients as berth's.
 */
import type { ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run } from '../../src/util/run.js';
import { serveInNetns } from '../../test/integration/stream-fixture.js';
import { CNI_BIN_DIR, benchConflist } from '../lib/cni.js';
import { startContainerd, type RunningContainerd } from '../lib/containerd.js';
import { PAUSE_IMAGE, writeBenchImages } from '../lib/images.js';
import { benchSandboxConfig, execTrueRequest, workloadConfig } from '../lib/pod-configs.js';

const BRIDGE = 'sbench0';

export interface ContainerdPeer {
  /** containerd's pid (its streaming server runs inside it). */
  pid: number;
  /** The pod's network namespace, through its pause process. */
  netnsPath: string;
  execUrl(): Promise<string>;
  portForwardUrl(): Promise<string>;
  stop(): Promise<void>;
}

export async function startContainerdPeer(ports: {
  sinkPort: number;
  sourcePort: number;
  sourceBytes: number;
}): Promise<ContainerdPeer> {
  const work = await mkdtemp(join(tmpdir(), 'berth-bench-stream-ctd-'));
  const servers: ChildProcess[] = [];
  let containerd: RunningContainerd | undefined;
  let podSandboxId = '';
  const stop = async () => {
    for (const server of servers) server.kill('SIGKILL');
    if (containerd && podSandboxId) {
      await containerd.cri.runtime.stopPodSandbox({ podSandboxId }).catch(() => undefined);
      await containerd.cri.runtime.removePodSandbox({ podSandboxId }).catch(() => undefined);
    }
    await containerd?.stop();
    await run('/usr/sbin/ip', ['link', 'del', BRIDGE]);
    await rm(work, { recursive: true, force: true });
  };
  try {
    const cniDir = join(work, 'cni');
    await mkdir(cniDir);
    await writeFile(join(cniDir, '10-bench.conflist'), benchConflist(BRIDGE, '10.233.0.0/16'));
    const images = await writeBenchImages(work);
    containerd = await startContainerd(join(work, 'containerd'), {
      sandboxImage: PAUSE_IMAGE,
      cniConfDir: cniDir,
      cniBinDir: CNI_BIN_DIR,
    });
    await containerd.importArchive(images.pause);
    await containerd.importArchive(images.workload);
    const runtime = containerd.cri.runtime;
    const sandboxConfig = benchSandboxConfig({
      name: 'bench-stream',
      hostname: 'bench-stream',
      uid: 'bench-stream-uid',
      logDirectory: join(work, 'logs'),
    });
    ({ podSandboxId } = await runtime.runPodSandbox({ config: sandboxConfig, runtimeHandler: '' }));
    const { containerId } = await runtime.createContainer({
      podSandboxId,
      config: workloadConfig(),
      sandboxConfig,
    });
    await runtime.startContainer({ containerId });
    const status = await runtime.podSandboxStatus({ podSandboxId, verbose: true });
    const pausePid = (JSON.parse(status.info.info ?? '{}') as { pid?: number }).pid;
    if (!pausePid) throw new Error('containerd reported no pause pid for the bench pod');
    const netnsPath = `/proc/${pausePid}/ns/net`;
    servers.push(await serveInNetns(netnsPath, ports.sinkPort, 'sink'));
    servers.push(await serveInNetns(netnsPath, ports.sourcePort, `source:${ports.sourceBytes}`));
    return {
      pid: containerd.pid,
      netnsPath,
      async execUrl() {
        return (await runtime.exec(execTrueRequest(containerId))).url;
      },
      async portForwardUrl() {
        return (await runtime.portForward({ podSandboxId, port: [] })).url;
      },
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}
