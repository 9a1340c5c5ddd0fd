/**
 * containerd (Debian's package) as a side-by-side peer for benchmarks: its
 * own root, state and socket in a temp dir, the CRI plugin configured like
 * berth (restrict_oom_score_adj because this host lacks CAP_SYS_RESOURCE,
 * a stream port of 0, a private CNI conf dir).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, writeFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { connectCri, type CriClients } from '../../test/helpers/cri-client.js';
import { run, runChecked } from '../../src/util/run.js';

export const CONTAINERD = '/usr/bin/containerd';
export const CTR = '/usr/bin/ctr';

export interface RunningContainerd {
  pid: number;
  socket: string;
  cri: CriClients;
  /** Imports a docker-save or OCI archive into the k8s.io namespace. */
  importArchive(file: string): Promise<void>;
  stop(): Promise<void>;
}

export const containerdInstalled = (): boolean => existsSync(CONTAINERD) && existsSync(CTR);

export async function startContainerd(
  dir: string,
  options: {
    sandboxImage: string;
    cniConfDir: string;
    cniBinDir: string;
    /** Registries (host:port) to pull from over plain HTTP. */
    plainHttpRegistries?: string[];
  },
): Promise<RunningContainerd> {
  const mirrors = (options.plainHttpRegistries ?? [])
    .map(
      (host) =>
        `  [plugins."io.containerd.grpc.v1.cri".registry.mirrors."${host}"]\n    endpoint = ["http://${host}"]\n`,
    )
    .join('');
  const socket = join(dir, 'containerd.sock');
  const configFile = join(dir, 'config.toml');
  await mkdir(join(dir, 'root'), { recursive: true });
  await writeFile(
    configFile,
    `version = 2
root = "${join(dir, 'root')}"
state = "${join(dir, 'state')}"
[grpc]
  address = "${socket}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "${options.sandboxImage}"
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "${options.cniBinDir}"
    conf_dir = "${options.cniConfDir}"
${mirrors}`,
  );
  const child: ChildProcess = spawn(CONTAINERD, ['--config', configFile, '--log-level', 'warn'], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-8192)));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const deadline = Date.now() + 30_000;
  while (!existsSync(socket)) {
    if (Date.now() > deadline || child.exitCode !== null) {
      child.kill('SIGKILL');
      throw new Error(`containerd did not start: ${stderr}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  const cri = connectCri(socket);
  // The CRI plugin registers a moment after the socket appears.
  while ((await cri.runtime.version({ version: '' }).catch(() => undefined)) === undefined) {
    if (Date.now() > deadline) throw new Error(`containerd CRI plugin not ready: ${stderr}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    pid: child.pid!,
    socket,
    cri,
    async importArchive(file: string) {
      await runChecked(CTR, ['--address', socket, '-n', 'k8s.io', 'images', 'import', file]);
    },
    async stop() {
      cri.close();
      child.kill('SIGTERM');
      await Promise.race([exited, new Promise((r) => setTimeout(r, 10_000))]);
      if (child.exitCode === null) child.kill('SIGKILL');
      // Shims outlive containerd; the caller removed every pod first, so any left are strays.
      await run('pkill', ['-f', `containerd-shim-runc-v2 .*-address ${socket}`]);
      await rm(dir, { recursive: true, force: true }).catch(() => undefined);
    },
  };
}
