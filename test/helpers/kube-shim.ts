/**
 * A tiny stand-in for the Kubernetes API server, enough for a real kubectl
 * to run `exec`, `attach` and `port-forward` against berth: discovery, one
 * pod, and the exec/attach/portforward subresources. Each upgrade request
 * asks berth for a fresh stream URL (as kubelet would through the CRI) and
 * then relays the client's upgrade request byte for byte to that URL, the way
 * the API server proxies to kubelet.
 */
import { createServer, type IncomingMessage, type Server } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';

export interface ShimContainer {
  name: string;
  stdin?: boolean;
  tty?: boolean;
}

export interface StreamParams {
  container: string;
  command: string[];
  stdin: boolean;
  stdout: boolean;
  stderr: boolean;
  tty: boolean;
  ports: number[];
}

export interface KubeShimOptions {
  namespace?: string;
  podName: string;
  containers: ShimContainer[];
  /** Returns a berth stream URL for the request (calls Exec/Attach/PortForward). */
  streamUrl(kind: 'exec' | 'attach' | 'portforward', params: StreamParams): Promise<string>;
}

export interface KubeShim {
  url: string;
  kubeconfig: string;
  /** Environment for kubectl: KUBECONFIG, a private HOME and cache. */
  env(extra?: Record<string, string>): NodeJS.ProcessEnv;
  /** Upgrade requests seen, by kind and Upgrade header (to check which transport kubectl used). */
  upgrades: { kind: string; upgrade: string; protocols: string }[];
  close(): Promise<void>;
}

const json = (value: unknown) => JSON.stringify(value);

function flag(value: string | null): boolean {
  return value === 'true' || value === '1';
}

export async function startKubeShim(options: KubeShimOptions): Promise<KubeShim> {
  const namespace = options.namespace ?? 'default';
  const dir = await mkdtemp(join(tmpdir(), 'berth-kube-shim-'));
  const upgrades: KubeShim['upgrades'] = [];
  const sockets = new Set<Duplex>();
  const podPath = `/api/v1/namespaces/${namespace}/pods/${options.podName}`;

  const pod = {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: {
      name: options.podName,
      namespace,
      uid: '6d1d5bb6-0000-4000-8000-000000000001',
      resourceVersion: '1',
    },
    spec: {
      containers: options.containers.map((c) => ({
        name: c.name,
        image: 'busybox',
        stdin: c.stdin ?? false,
        tty: c.tty ?? false,
      })),
    },
    status: {
      phase: 'Running',
      containerStatuses: options.containers.map((c) => ({
        name: c.name,
        ready: true,
        started: true,
        restartCount: 0,
        image: 'busybox',
        imageID: '',
        state: { running: { startedAt: '2026-01-01T00:00:00Z' } },
      })),
    },
  };

  const routes: Record<string, unknown> = {
    '/version': { major: '1', minor: '32', gitVersion: 'v1.32.0', platform: 'linux/amd64' },
    '/api': { kind: 'APIVersions', versions: ['v1'], serverAddressByClientCIDRs: [] },
    '/apis': { kind: 'APIGroupList', apiVersion: 'v1', groups: [] },
    '/api/v1': {
      kind: 'APIResourceList',
      groupVersion: 'v1',
      resources: [
        {
          name: 'pods',
          singularName: 'pod',
          namespaced: true,
          kind: 'Pod',
          verbs: ['get', 'list'],
          shortNames: ['po'],
        },
        {
          name: 'pods/attach',
          singularName: '',
          namespaced: true,
          kind: 'PodAttachOptions',
          verbs: ['create', 'get'],
        },
        {
          name: 'pods/exec',
          singularName: '',
          namespaced: true,
          kind: 'PodExecOptions',
          verbs: ['create', 'get'],
        },
        {
          name: 'pods/portforward',
          singularName: '',
          namespaced: true,
          kind: 'PodPortForwardOptions',
          verbs: ['create', 'get'],
        },
      ],
    },
    [podPath]: pod,
  };

  const server: Server = createServer((req, res) => {
    const path = new URL(req.url ?? '/', 'http://x').pathname;
    const body = routes[path];
    if (req.method === 'GET' && body !== undefined) {
      res.writeHead(200, { 'content-type': 'application/json' }).end(json(body));
      return;
    }
    res.writeHead(404, { 'content-type': 'application/json' }).end(
      json({
        kind: 'Status',
        apiVersion: 'v1',
        metadata: {},
        status: 'Failure',
        message: `${path} not found`,
        reason: 'NotFound',
        code: 404,
      }),
    );
  });

  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    void relayUpgrade(req, socket, head).catch((err: unknown) => {
      const message = err instanceof Error ? err.message : String(err);
      socket.end(
        `HTTP/1.1 500 Internal Server Error\r\nContent-Length: ${Buffer.byteLength(message)}\r\nConnection: close\r\n\r\n${message}`,
      );
    });
  });

  async function relayUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://x');
    const match = /\/pods\/([^/]+)\/(exec|attach|portforward)$/.exec(url.pathname);
    if (!match || match[1] !== options.podName) {
      socket.end('HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
      return;
    }
    const kind = match[2] as 'exec' | 'attach' | 'portforward';
    upgrades.push({
      kind,
      upgrade: String(req.headers.upgrade ?? ''),
      protocols: String(
        req.headers['sec-websocket-protocol'] ??
          req.headersDistinct['x-stream-protocol-version']?.join(',') ??
          '',
      ),
    });
    const q = url.searchParams;
    const target = new URL(
      await options.streamUrl(kind, {
        container: q.get('container') ?? options.containers[0].name,
        command: q.getAll('command'),
        stdin: flag(q.get('stdin')),
        stdout: flag(q.get('stdout')),
        stderr: flag(q.get('stderr')),
        tty: flag(q.get('tty')),
        ports: q
          .getAll('ports')
          .flatMap((p) => p.split(','))
          .map(Number)
          .filter(Boolean),
      }),
    );
    const upstream = connect(Number(target.port), target.hostname);
    upstream.on('error', () => socket.destroy());
    socket.on('error', () => upstream.destroy());
    await new Promise<void>((resolve, reject) => {
      upstream.once('connect', resolve);
      upstream.once('error', reject);
    });
    upstream.setNoDelay(true);
    const lines = [`${req.method} ${target.pathname}${url.search} HTTP/1.1`];
    for (let i = 0; i < req.rawHeaders.length; i += 2) {
      const name = req.rawHeaders[i];
      lines.push(`${name}: ${name.toLowerCase() === 'host' ? target.host : req.rawHeaders[i + 1]}`);
    }
    upstream.write(`${lines.join('\r\n')}\r\n\r\n`);
    if (head.length > 0) upstream.write(head);
    socket.pipe(upstream);
    upstream.pipe(socket);
  }

  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const port = (server.address() as AddressInfo).port;
  const url = `http://127.0.0.1:${port}`;
  const kubeconfig = join(dir, 'kubeconfig');
  await writeFile(
    kubeconfig,
    json({
      apiVersion: 'v1',
      kind: 'Config',
      clusters: [{ name: 'shim', cluster: { server: url } }],
      users: [{ name: 'shim', user: {} }],
      contexts: [{ name: 'shim', context: { cluster: 'shim', user: 'shim', namespace } }],
      'current-context': 'shim',
    }),
  );

  return {
    url,
    kubeconfig,
    upgrades,
    env(extra = {}) {
      return {
        PATH: process.env.PATH ?? '/usr/bin:/bin',
        HOME: dir,
        KUBECONFIG: kubeconfig,
        KUBECACHEDIR: join(dir, 'cache'),
        ...extra,
      };
    },
    async close() {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await rm(dir, { recursive: true, force: true });
    },
  };
}
