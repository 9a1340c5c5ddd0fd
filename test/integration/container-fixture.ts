/**
 * Shared set-up of the container tests: a busybox image imported into a real
 * berth, pods on real runc + conmon (host network, or a CNI bridge of the
 * test's own), and helpers to poll container state and clean up.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startBerth, BERTH_MAIN, type RunningBerth } from '../helpers/berth-process.js';
import { buildImage, writeDockerArchive } from '../helpers/image-builder.js';
import {
  ContainerConfig,
  ImageSpec,
  NamespaceMode,
  PodSandboxConfig,
  type ContainerStatus,
  type DeepPartial,
} from '../../src/generated/api.js';
import { run } from '../../src/util/run.js';

export const IMAGE = 'example.com/berth-test/busybox:1';
/** An image whose config sets a stop signal, user, env and workdir. */
export const CONFIGURED_IMAGE = 'example.com/berth-test/configured:1';

export async function importImages(configFile: string, work: string): Promise<void> {
  const plain = await buildImage({ config: { cmd: ['sh'] } });
  const configured = await buildImage({
    config: {
      entrypoint: ['sh', '-c'],
      cmd: ['trap "echo got-usr1; exit 7" USR1; while true; do sleep 0.1; done'],
      env: ['FROM_IMAGE=yes', 'PATH=/bin:/usr/bin'],
      workingDir: '/tmp',
      stopSignal: 'SIGUSR1',
    },
  });
  const archive = join(work, 'images.tar');
  await writeDockerArchive(archive, [
    { image: plain, repoTags: [IMAGE] },
    { image: configured, repoTags: [CONFIGURED_IMAGE] },
  ]);
  await importArchive(configFile, archive);
}

/** `berth image import ARCHIVE` through the daemon the config names; throws with its stderr on failure. */
export async function importArchive(configFile: string, archive: string): Promise<void> {
  const child = spawn(process.execPath, [BERTH_MAIN, 'image', 'import', archive, '--config', configFile], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let err = '';
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
  if (code !== 0) throw new Error(`image import failed (${code}): ${err}`);
}

export interface Env {
  work: string;
  berth: RunningBerth;
  /** Unique CNI bridge of this run (removed by cleanup). */
  bridge: string;
  cleanup(): Promise<void>;
}

/**
 * A CNI bridge network of a test's own (its bridge, a random /24 in 10.x, host-local
 * IPAM under ipamDir), written as the only conflist in cniDir.
 */
export async function writeBridgeConflist(
  cniDir: string,
  bridge: string,
  ipamDir: string,
  options: { mode?: number } = {},
): Promise<void> {
  const subnet = `10.${150 + Math.floor(Math.random() * 100)}.${Math.floor(Math.random() * 250)}.0/24`;
  await mkdir(cniDir, { recursive: true, mode: options.mode });
  await writeFile(
    join(cniDir, '10-test.conflist'),
    JSON.stringify({
      cniVersion: '1.0.0',
      name: `net-${bridge}`,
      plugins: [
        {
          type: 'bridge',
          bridge,
          isGateway: true,
          ipMasq: false,
          ipam: { type: 'host-local', ranges: [[{ subnet }]], dataDir: ipamDir },
        },
      ],
    }),
  );
}

/**
 * Starts berth with a CNI bridge network of its own (unique bridge name and
 * subnet) and imports the test images.
 */
export async function startEnv(prefix: string, toml = '', args: string[] = []): Promise<Env> {
  const work = await mkdtemp(join(tmpdir(), `berth-${prefix}-`));
  const bridge = `bt${randomBytes(4).toString('hex')}`;
  const berthDir = join(work, 'berth');
  await writeBridgeConflist(join(berthDir, 'cni'), bridge, join(work, 'ipam'));
  const berth = await startBerth({ dir: berthDir, toml, args });
  await importImages(berth.configFile, work);
  const env: Env = {
    work,
    berth,
    bridge,
    async cleanup() {
      // env.berth, not the first one: restart tests replace it.
      await cleanupBerth(env.berth);
      await run('/usr/sbin/ip', ['link', 'del', bridge]).catch(() => undefined);
      await rm(work, { recursive: true, force: true });
    },
  };
  return env;
}

/** Removes every pod (and so every container) berth knows, then stops it. */
export async function cleanupBerth(berth: RunningBerth): Promise<void> {
  try {
    const { items } = await berth.cri.runtime.listPodSandbox({ filter: undefined });
    for (const pod of items) {
      await berth.cri.runtime.stopPodSandbox({ podSandboxId: pod.id }).catch(() => undefined);
      await berth.cri.runtime.removePodSandbox({ podSandboxId: pod.id }).catch(() => undefined);
    }
  } catch {
    // berth already gone
  }
  await berth.stop();
  await killLeftovers(berth.dir);
}

/** Kills conmons and container processes left under berth's run root (after a failed test). */
export async function killLeftovers(dir: string): Promise<void> {
  const runtimes = join(dir, 'run', 'runtimes');
  for (const handler of await readdir(runtimes).catch(() => [] as string[])) {
    const root = join(runtimes, handler);
    if (handler === 'runsc') {
      // runsc's root holds state files, not one dir per container: ask it for the list.
      const listed = await run('/usr/bin/runsc', [`--root=${root}`, 'list', '-q']).catch(() => undefined);
      for (const id of listed?.stdout.split('\n').filter(Boolean) ?? []) {
        await run('/usr/bin/runsc', [`--root=${root}`, 'delete', '-force', id]).catch(() => undefined);
      }
      continue;
    }
    for (const id of await readdir(root).catch(() => [] as string[])) {
      await run('/usr/sbin/runc', [`--root=${root}`, 'delete', '--force', id]).catch(() => undefined);
    }
  }
  const conmonDir = join(dir, 'run', 'conmon');
  for (const id of await readdir(conmonDir).catch(() => [] as string[])) {
    const pid = Number((await readFile(join(conmonDir, id, 'conmon.pid'), 'utf8').catch(() => '0')).trim());
    if (pid > 0) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone
      }
    }
  }
  // Overlay mounts of containers that were not removed.
  const mounts = await readFile('/proc/self/mountinfo', 'utf8');
  for (const line of mounts.split('\n')) {
    const point = line.split(' ')[4];
    if (point?.startsWith(dir)) await run('/usr/bin/umount', ['-l', point]).catch(() => undefined);
  }
}

let podCounter = 0;

export function podConfig(
  work: string,
  options: { hostNetwork?: boolean; name?: string; labels?: Record<string, string> } = {},
): PodSandboxConfig {
  const name = options.name ?? `pod-${process.pid}-${++podCounter}`;
  return PodSandboxConfig.fromPartial({
    metadata: { name, namespace: 'test', uid: randomBytes(8).toString('hex'), attempt: 0 },
    hostname: name,
    logDirectory: join(work, 'logs', name),
    labels: options.labels ?? {},
    linux: {
      securityContext: {
        namespaceOptions: {
          network: options.hostNetwork === false ? NamespaceMode.POD : NamespaceMode.NODE,
          pid: NamespaceMode.CONTAINER,
        },
      },
    },
  });
}

export type ContainerConfigInput = DeepPartial<ContainerConfig>;

export function containerConfig(name: string, partial: ContainerConfigInput = {}): ContainerConfig {
  return ContainerConfig.fromPartial({
    metadata: { name, attempt: 0 },
    image: { image: IMAGE },
    logPath: `${name}/0.log`,
    ...partial,
    linux: {
      ...partial.linux,
      securityContext: {
        ...partial.linux?.securityContext,
        // As kubelet sends them, matching podConfig's default (host network, own PID namespace).
        namespaceOptions: {
          network: NamespaceMode.NODE,
          pid: NamespaceMode.CONTAINER,
          ...partial.linux?.securityContext?.namespaceOptions,
        },
      },
    },
  });
}

/** A read-only image volume as kubelet sends it: the Mount names an image, not a host path. */
export const imageVolume = (containerPath: string, image: string, imageSubPath = '') => ({
  containerPath,
  hostPath: '',
  readonly: true,
  image: ImageSpec.fromPartial({ image }),
  imageSubPath,
});

export async function waitForState(
  berth: RunningBerth,
  id: string,
  check: (s: ContainerStatus) => boolean,
  timeoutMs = 20_000,
): Promise<ContainerStatus> {
  const deadline = Date.now() + timeoutMs;
  let last: ContainerStatus | undefined;
  while (Date.now() < deadline) {
    last = (await berth.cri.runtime.containerStatus({ containerId: id, verbose: false })).status;
    if (last && check(last)) return last;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(
    `container ${id}: condition not met; last status ${JSON.stringify(last, (_, v: unknown) => (typeof v === 'bigint' ? v.toString() : v))}`,
  );
}

export const grpcCode = (code: number, pattern?: RegExp) => (err: { code: number; details: string }) => {
  if (err.code !== code) throw new Error(`expected gRPC code ${code}, got ${err.code}: ${err.details}`);
  if (pattern && !pattern.test(err.details))
    throw new Error(`message ${JSON.stringify(err.details)} does not match ${pattern}`);
  return true;
};

/** Running (not gone, not a zombie waiting for this machine's slow PID 1 to reap it). */
export function processRunning(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

/** Child processes of `pid` that are zombies. */
export async function zombieChildren(pid: number): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = await readFile(`/proc/${entry}/stat`, 'utf8').catch(() => '');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (Number(fields[1]) === pid && fields[0] === 'Z') out.push(`${entry}: ${stat}`);
  }
  return out;
}

/** The namespace options kubelet sends for a pod with its own network and no shared PID namespace. */
export const POD_NAMESPACES = {
  network: NamespaceMode.POD,
  pid: NamespaceMode.CONTAINER,
  ipc: NamespaceMode.POD,
};

/** ExecSync that must exit 0 (else the assertion names the command and its stderr); its stdout. */
export async function execOk(berth: RunningBerth, containerId: string, cmd: string[]): Promise<string> {
  const res = await berth.cri.runtime.execSync({ containerId, cmd, timeout: 10n });
  assert.equal(res.exitCode, 0, `${cmd.join(' ')}: ${Buffer.from(res.stderr).toString()}`);
  return Buffer.from(res.stdout).toString();
}
