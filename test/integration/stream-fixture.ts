/**
 * Shared set-up of the streaming tests: real containers (conmon + runc on a
 * busybox rootfs) made with the OCI engine, real network namespaces with an
 * echo server, and berth's streaming server over a backend that resolves
 * them, plus the kubectl API shim in front of it.
 */
import { mkdtemp, readdir, rm, rmdir } from 'node:fs/promises';
import { spawn, type ChildProcess } from 'node:child_process';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { ConmonEngine } from '../../src/oci/engine.js';
import { silentLogger, type Logger } from '../../src/log.js';
import { run, runChecked } from '../../src/util/run.js';
import { FailedPreconditionError, NotFoundError } from '../../src/errors.js';
import { StreamServer, type StreamingConfig } from '../../src/stream/server.js';
import type { AttachTarget, StreamBackend } from '../../src/stream/types.js';
import type { RuntimeHandler } from '../../src/oci/types.js';
import { makeBusyboxRootfs, minimalSpec, runcHandler, testId } from '../helpers/oci-bundle.js';
import { startKubeShim, type KubeShim, type ShimContainer } from '../helpers/kube-shim.js';

export interface ContainerOptions {
  tty?: boolean;
  stdin?: boolean;
  stdinOnce?: boolean;
}

export class StreamFixture {
  dir = '';
  rootfs = '';
  engine!: ConmonEngine;
  handler!: RuntimeHandler;
  server!: StreamServer;
  readonly containers = new Map<string, AttachTarget>();
  readonly netns = new Map<string, string>();
  private readonly netnsNames: string[] = [];
  private readonly children: ChildProcess[] = [];
  readonly cgParent = `/berth-stream-test-${process.pid}-${randomBytes(3).toString('hex')}`;
  config: StreamingConfig = {
    address: '127.0.0.1',
    port: 0,
    tls_cert_file: '',
    tls_key_file: '',
    idle_timeout_seconds: 4 * 3600,
    token_ttl_seconds: 60,
    max_in_flight: 64,
  };

  async setup(config: Partial<StreamingConfig> = {}, log: Logger = silentLogger): Promise<void> {
    Object.assign(this.config, config);
    this.dir = await mkdtemp(join(tmpdir(), 'berth-stream-'));
    this.rootfs = join(this.dir, 'rootfs');
    await makeBusyboxRootfs(this.rootfs);
    this.handler = runcHandler(this.dir);
    this.engine = new ConmonEngine({
      conmonPath: '/usr/bin/conmon',
      runRoot: join(this.dir, 'run'),
      exitDir: join(this.dir, 'run', 'exits'),
      cgroupDriver: 'cgroupfs',
      log: silentLogger,
    });
    this.server = new StreamServer({ config: () => this.config, backend: this.backend(), log });
    await this.server.start();
  }

  backend(): StreamBackend {
    const running = async (id: string) => {
      if (!this.containers.has(id)) throw new NotFoundError(`container ${id} not found`);
      // Like berth's record check: cheap (conmon's pid), no runtime call.
      if (!(await this.engine.conmonAlive(id)))
        throw new FailedPreconditionError(`container ${id} is not running`);
    };
    return {
      resolveExec: async (id) => {
        await running(id);
        return {
          start: (args, tty) => this.engine.exec({ id, handler: this.handler, args, tty }),
        };
      },
      resolveAttach: async (id) => {
        await running(id);
        return this.containers.get(id)!;
      },
      resolvePortForward: (id) => {
        const path = this.netns.get(id);
        if (!path) return Promise.reject(new NotFoundError(`pod sandbox ${id} not found`));
        return Promise.resolve({ netnsPath: path });
      },
    };
  }

  /** Creates and starts a container running args. */
  async container(args: string[], options: ContainerOptions = {}): Promise<string> {
    const id = testId('str');
    const socketPath = this.engine.attachSocketPath(id);
    this.containers.set(id, {
      socketPath,
      ctlPath: join(dirname(socketPath), 'ctl'),
      tty: options.tty ?? false,
      stdin: options.stdin ?? false,
      stdinOnce: options.stdinOnce ?? false,
    });
    await this.engine.create({
      id,
      handler: this.handler,
      bundleDir: join(this.dir, 'bundles', id),
      spec: minimalSpec(this.rootfs, args, {
        cgroupsPath: `${this.cgParent}/${id}`,
        terminal: options.tty ?? false,
      }),
      logPath: join(this.dir, 'logs', `${id}.log`),
      stdin: options.stdin ?? false,
      stdinOnce: options.stdinOnce ?? false,
      tty: options.tty ?? false,
    });
    await this.engine.start(id, this.handler);
    return id;
  }

  /** A fresh network namespace (lo up) registered as pod sandbox `podId`, with a TCP echo server on port. */
  async podNetns(podId: string, echoPort: number): Promise<string> {
    const name = `berth-st-${randomBytes(4).toString('hex')}`;
    await runChecked('ip', ['netns', 'add', name]);
    this.netnsNames.push(name);
    await runChecked('ip', ['-n', name, 'link', 'set', 'lo', 'up']);
    const path = `/run/netns/${name}`;
    this.netns.set(podId, path);
    await this.serveInNetns(path, echoPort, 'echo');
    return path;
  }

  /** A byte server inside the netns (see serveInNetns), stopped by cleanup. */
  async serveInNetns(netnsPath: string, port: number, mode: string): Promise<void> {
    this.children.push(await serveInNetns(netnsPath, port, mode));
  }

  /** The kubectl shim for one pod whose containers are given. */
  shim(containers: (ShimContainer & { id: string })[], podSandboxId = ''): Promise<KubeShim> {
    const byName = new Map(containers.map((c) => [c.name, c.id]));
    return startKubeShim({
      podName: 'pod1',
      containers,
      streamUrl: (kind, p) => {
        const containerId = byName.get(p.container) ?? '';
        if (kind === 'exec')
          return this.server.exec({
            containerId,
            cmd: p.command,
            tty: p.tty,
            stdin: p.stdin,
            stdout: p.stdout,
            stderr: p.stderr,
          });
        if (kind === 'attach')
          return this.server.attach({
            containerId,
            tty: p.tty,
            stdin: p.stdin,
            stdout: p.stdout,
            stderr: p.stderr,
          });
        return this.server.portForward({ podSandboxId, port: p.ports });
      },
    });
  }

  async cleanup(): Promise<void> {
    await this.server?.close().catch(() => undefined);
    for (const child of this.children) child.kill('SIGKILL');
    for (const id of this.containers.keys()) {
      await run(this.handler.path, [`--root=${this.handler.root}`, 'delete', '--force', id]).catch(
        () => undefined,
      );
      const conmonPid = await this.engine.conmonPid(id).catch(() => 0);
      if (conmonPid > 0) {
        try {
          process.kill(conmonPid, 'SIGKILL');
        } catch {
          // gone
        }
      }
    }
    this.engine?.close();
    for (const name of this.netnsNames) await run('ip', ['netns', 'delete', name]).catch(() => undefined);
    if (this.dir) await rm(this.dir, { recursive: true, force: true });
    const remove = async (full: string): Promise<void> => {
      const entries = await readdir(full, { withFileTypes: true }).catch(() => []);
      for (const e of entries) if (e.isDirectory()) await remove(join(full, e.name));
      await rmdir(full).catch(() => undefined);
    };
    for (const hierarchy of await readdir('/sys/fs/cgroup').catch(() => [] as string[])) {
      await remove(join('/sys/fs/cgroup', hierarchy, this.cgParent));
    }
    await remove(join('/sys/fs/cgroup', this.cgParent));
  }
}

/** Runs kubectl with the shim's environment; resolves with its result. */
export function kubectl(
  shim: KubeShim,
  args: string[],
  options: { input?: string | Buffer; env?: Record<string, string>; timeoutMs?: number } = {},
) {
  return run('/usr/bin/kubectl', ['--request-timeout=30s', ...args], {
    env: shim.env(options.env),
    input: options.input,
    timeoutMs: options.timeoutMs ?? 60_000,
  });
}

/**
 * A Node TCP server inside the netns: 'echo' returns what it gets;
 * 'sink' counts bytes and answers the count when the client half-closes;
 * 'source:N' sends N bytes then closes.
 */
export async function serveInNetns(netnsPath: string, port: number, mode: string): Promise<ChildProcess> {
  const script = `
const net = require('node:net');
const mode = process.argv[2];
net.createServer({ allowHalfOpen: true }, (s) => {
  s.on('error', () => {});
  if (mode === 'echo') { s.pipe(s); return; }
  if (mode === 'sink') { let n = 0; s.on('data', (c) => { n += c.length; }); s.on('end', () => s.end(String(n))); return; }
  if (mode.startsWith('source:')) {
    let left = Number(mode.slice(7)); const chunk = Buffer.alloc(1 << 20, 7);
    const pump = () => { while (left > 0) { const n = Math.min(left, chunk.length); left -= n; if (!s.write(chunk.subarray(0, n))) return s.once('drain', pump); } s.end(); };
    s.resume(); pump();
  }
}).listen(Number(process.argv[1]), '127.0.0.1', () => process.stdout.write('ready\\n'));`;
  const child = spawn(
    'nsenter',
    [`--net=${netnsPath}`, '--', process.execPath, '-e', script, String(port), mode],
    {
      stdio: ['ignore', 'pipe', 'inherit'],
    },
  );
  await new Promise<void>((resolve, reject) => {
    child.stdout!.once('data', () => resolve());
    child.once('exit', (code) => reject(new Error(`server in ${netnsPath} exited with ${code}`)));
  });
  return child;
}
