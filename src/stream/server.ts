/**
 * berth's streaming server: Exec, Attach and PortForward return URLs on it;
 * kubelet (or the API server, or crictl) then upgrades a request on that URL
 * to SPDY/3.1 or WebSocket. Each URL carries a single-use token (see
 * tokens.ts); an unknown, used or expired token gets 404.
 *
 * Nothing a stream carries is logged: log lines name the session (kind,
 * container, protocol) and its outcome only, and never the URL (its token).
 */
import type { IncomingMessage, Server } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { readFile } from 'node:fs/promises';
import type { AddressInfo, Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { WebSocket, WebSocketServer } from 'ws';
import type { Logger } from '../log.js';
import type { BerthConfig } from '../config/schema.js';
import { BerthError, InvalidArgumentError, NotFoundError, errorMessage } from '../errors.js';
import { TokenCache } from './tokens.js';
import type { PendingRequest, StreamBackend } from './types.js';
import { SpdyConnection } from './spdy/connection.js';
import { SPDY_COMMAND_PROTOCOLS, spdyCommandStreams, type StreamChoice } from './spdy-command.js';
import { SPDY_PORTFORWARD_PROTOCOLS, serveSpdyPortForward } from './spdy-portforward.js';
import {
  ChannelSocket,
  WS_COMMAND_PROTOCOLS,
  WS_PORTFORWARD_PROTOCOLS,
  WS_SPDY_TUNNEL_PROTOCOL,
  type ChannelProtocol,
} from './websocket.js';
import { wsCommandStreams } from './ws-command.js';
import { serveWsPortForward } from './ws-portforward.js';
import { runAttach, runExec, type CommandStreams } from './command.js';
import { READ_BUFFER_BYTES, stopNetnsDialers } from './netns-dial.js';
import { takeOverReads } from './own-reads.js';
import { status as GrpcStatus } from '@grpc/grpc-js';
import { http } from '../util/node-http.js';

/** How long a client may take to open its streams after the upgrade. */
const STREAM_CREATION_TIMEOUT_MS = 30_000;

export type StreamingConfig = BerthConfig['streaming'];

export interface StreamServerOptions {
  config: () => StreamingConfig;
  backend: StreamBackend;
  log: Logger;
}

/** Protocol negotiation of X-Stream-Protocol-Version: the client's first choice berth supports. */
export function negotiateProtocol(
  clientProtocols: string[],
  serverProtocols: string[],
): { ok: true; protocol: string } | { ok: false; message: string } {
  if (clientProtocols.length === 0) return { ok: true, protocol: '' };
  const chosen = clientProtocols.find((p) => serverProtocols.includes(p));
  if (chosen !== undefined) return { ok: true, protocol: chosen };
  return {
    ok: false,
    message: `unable to upgrade: unable to negotiate protocol: client supports [${clientProtocols.join(' ')}], server accepts [${serverProtocols.join(' ')}]`,
  };
}

function headerList(req: IncomingMessage, name: string): string[] {
  return (req.headersDistinct[name] ?? [])
    .flatMap((v) => v.split(','))
    .map((v) => v.trim())
    .filter(Boolean);
}

function rawResponse(
  socket: Duplex,
  code: number,
  reason: string,
  headers: [string, string][] = [],
  body = '',
): void {
  const lines = [`HTTP/1.1 ${code} ${reason}`, ...headers.map(([k, v]) => `${k}: ${v}`)];
  if (code !== 101) {
    lines.push(
      'Content-Type: text/plain; charset=utf-8',
      `Content-Length: ${Buffer.byteLength(body)}`,
      'Connection: close',
    );
  }
  socket.write(`${lines.join('\r\n')}\r\n\r\n${code === 101 ? '' : body}`);
  if (code !== 101) socket.end();
}

function httpCodeOf(err: unknown): [number, string] {
  if (err instanceof BerthError) {
    if (err.code === GrpcStatus.NOT_FOUND) return [404, 'Not Found'];
    if (err.code === GrpcStatus.INVALID_ARGUMENT) return [400, 'Bad Request'];
    if (err.code === GrpcStatus.FAILED_PRECONDITION) return [409, 'Conflict'];
  }
  return [500, 'Internal Server Error'];
}

type CreateWebSocketStream = (typeof import('ws'))['createWebSocketStream'];

const ROUTE = /^\/(exec|attach|portforward)\/([A-Za-z0-9_-]{16,128})$/;

export class StreamServer {
  private server?: Server;
  private readonly tokens: TokenCache<PendingRequest>;
  /** ws is loaded by the first WebSocket request: most nodes only ever see SPDY clients. */
  private websockets?: Promise<{ wss: WebSocketServer; toStream: CreateWebSocketStream }>;
  private readonly sockets = new Set<Duplex>();
  private baseUrl = '';

  constructor(private readonly options: StreamServerOptions) {
    this.tokens = new TokenCache(
      () => options.config().token_ttl_seconds * 1000,
      () => options.config().max_in_flight,
    );
  }

  /** Listens on streaming.address:port (0 = any free port). */
  async start(): Promise<void> {
    const config = this.options.config();
    const tls = Boolean(config.tls_cert_file && config.tls_key_file);
    let server: Server;
    if (tls) {
      const [cert, key] = await Promise.all([readFile(config.tls_cert_file), readFile(config.tls_key_file)]);
      server = createHttpsServer({ cert, key });
    } else {
      server = http.createServer();
    }
    server.on('request', (req, res) => {
      // Only upgrades are served; the token is not spent on a plain request.
      const match = ROUTE.exec(new URL(req.url ?? '/', 'http://x').pathname);
      const code = match && this.tokens.has(match[2]) ? 400 : 404;
      res
        .writeHead(code, { 'content-type': 'text/plain' })
        .end(code === 400 ? 'Upgrade request required\n' : '404 page not found\n');
    });
    server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
      this.sockets.add(socket);
      socket.once('close', () => this.sockets.delete(socket));
      socket.on('error', () => undefined);
      this.onUpgrade(req, socket, head).catch((err: unknown) => {
        this.options.log.warn({ err: errorMessage(err) }, 'stream request failed');
        socket.destroy();
      });
    });
    const address = config.address.replace(/^\[|\]$/g, '');
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(config.port, address, () => resolve());
    });
    this.server = server;
    const { port } = server.address() as AddressInfo;
    let host = address === '0.0.0.0' || address === '' ? '127.0.0.1' : address === '::' ? '::1' : address;
    if (host.includes(':')) host = `[${host}]`;
    this.baseUrl = `${tls ? 'https' : 'http'}://${host}:${port}`;
    this.options.log.info({ url: this.baseUrl }, 'streaming server listening');
  }

  get url(): string {
    return this.baseUrl;
  }

  /** Validates an Exec request and returns its URL. */
  async exec(request: {
    containerId: string;
    cmd: string[];
    tty: boolean;
    stdin: boolean;
    stdout: boolean;
    stderr: boolean;
  }): Promise<string> {
    if (!request.containerId) throw new InvalidArgumentError('exec: container_id is empty');
    if (request.cmd.length === 0)
      throw new InvalidArgumentError(`exec in container ${request.containerId}: cmd is empty`);
    this.checkStreams('exec', request);
    await this.options.backend.resolveExec(request.containerId);
    return this.register({
      kind: 'exec',
      ...pick(request),
      cmd: [...request.cmd],
      containerId: request.containerId,
    });
  }

  async attach(request: {
    containerId: string;
    tty: boolean;
    stdin: boolean;
    stdout: boolean;
    stderr: boolean;
  }): Promise<string> {
    if (!request.containerId) throw new InvalidArgumentError('attach: container_id is empty');
    this.checkStreams('attach', request);
    await this.options.backend.resolveAttach(request.containerId);
    return this.register({ kind: 'attach', ...pick(request), containerId: request.containerId });
  }

  async portForward(request: { podSandboxId: string; port: number[] }): Promise<string> {
    if (!request.podSandboxId) throw new InvalidArgumentError('port forward: pod_sandbox_id is empty');
    for (const port of request.port) {
      if (!Number.isInteger(port) || port < 1 || port > 65535) {
        throw new InvalidArgumentError(
          `port forward to pod sandbox ${request.podSandboxId}: invalid port ${port}`,
        );
      }
    }
    await this.options.backend.resolvePortForward(request.podSandboxId);
    return this.register({
      kind: 'portforward',
      podSandboxId: request.podSandboxId,
      ports: [...request.port],
    });
  }

  async close(): Promise<void> {
    this.tokens.clear();
    stopNetnsDialers();
    for (const socket of this.sockets) socket.destroy();
    const server = this.server;
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
    void this.websockets?.then(({ wss }) => wss.close());
  }

  private checkStreams(
    what: string,
    r: { containerId: string; tty: boolean; stdin: boolean; stdout: boolean; stderr: boolean },
  ): void {
    if (!r.stdin && !r.stdout && !r.stderr) {
      throw new InvalidArgumentError(
        `${what} in container ${r.containerId}: one of stdin, stdout and stderr must be set`,
      );
    }
    if (r.tty && r.stderr) {
      throw new InvalidArgumentError(
        `${what} in container ${r.containerId}: tty and stderr cannot both be set (a terminal has one output)`,
      );
    }
  }

  private register(pending: PendingRequest): string {
    if (!this.server) throw new NotFoundError('the streaming server is not running');
    const token = this.tokens.insert(pending);
    return `${this.baseUrl}/${pending.kind}/${token}`;
  }

  private async onUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    const match = ROUTE.exec(new URL(req.url ?? '/', 'http://x').pathname);
    const pending = match ? this.tokens.consume(match[2]) : undefined;
    if (!match || !pending || pending.kind !== match[1]) {
      rawResponse(socket, 404, 'Not Found', [], '404 page not found\n');
      return;
    }
    const idleMs = this.options.config().idle_timeout_seconds * 1000;
    const upgrade = (req.headers.upgrade ?? '').toLowerCase();
    if (upgrade === 'websocket') return this.onWebSocket(req, socket, head, pending, idleMs);
    if (!upgrade.split(',').some((u) => u.trim() === 'spdy/3.1')) {
      rawResponse(
        socket,
        400,
        'Bad Request',
        [],
        `unsupported upgrade ${JSON.stringify(req.headers.upgrade ?? '')}\n`,
      );
      return;
    }
    const supported = pending.kind === 'portforward' ? SPDY_PORTFORWARD_PROTOCOLS : SPDY_COMMAND_PROTOCOLS;
    const negotiated = negotiateProtocol(headerList(req, 'x-stream-protocol-version'), supported);
    if (!negotiated.ok) {
      rawResponse(
        socket,
        403,
        'Forbidden',
        supported.map((p) => ['X-Accepted-Stream-Protocol-Versions', p] as [string, string]),
        `${negotiated.message}\n`,
      );
      return;
    }
    const resolved = await this.resolve(pending).catch((err: unknown) => err as Error);
    if (resolved instanceof Error) {
      const [code, reason] = httpCodeOf(resolved);
      rawResponse(socket, code, reason, [], `${resolved.message}\n`);
      return;
    }
    const headers: [string, string][] = [
      ['Connection', 'Upgrade'],
      ['Upgrade', 'SPDY/3.1'],
    ];
    if (negotiated.protocol) headers.push(['X-Stream-Protocol-Version', negotiated.protocol]);
    rawResponse(socket, 101, 'Switching Protocols', headers);
    (socket as Socket).setNoDelay?.(true);
    const conn = this.spdyConnection(socket, head, idleMs);
    conn.on('error', (err: Error) => this.options.log.debug({ err: err.message }, 'SPDY protocol error'));
    await this.serve(pending, resolved, 'spdy', negotiated.protocol, {
      command: (choice) => spdyCommandStreams(conn, negotiated.protocol, choice, STREAM_CREATION_TIMEOUT_MS),
      portForward: (target) =>
        serveSpdyPortForward(conn, {
          podSandboxId: (pending as { podSandboxId: string }).podSandboxId,
          target,
          creationTimeoutMs: STREAM_CREATION_TIMEOUT_MS,
          log: this.options.log,
        }),
    });
  }

  /**
   * The SPDY connection over an upgraded socket, reading into a buffer of
   * its own where the socket can be taken over (plain TCP; see own-reads.ts).
   */
  private spdyConnection(socket: Duplex, head: Buffer, idleMs: number): SpdyConnection {
    // Reads start with the new socket; the connection that takes them comes next.
    const reader: { conn?: SpdyConnection } = {};
    const taken = takeOverReads(socket, Buffer.allocUnsafe(READ_BUFFER_BYTES), (bytes) =>
      reader.conn ? reader.conn.receiveBorrowed(bytes, () => reader.conn?.resumeReading()) : true,
    );
    if (!taken) {
      if (head.length > 0) socket.unshift(head);
      return new SpdyConnection(socket, { role: 'server', idleTimeoutMs: idleMs });
    }
    const own = taken.socket;
    this.sockets.add(own);
    own.once('close', () => this.sockets.delete(own));
    own.on('error', () => undefined);
    const conn = new SpdyConnection(own, { role: 'server', idleTimeoutMs: idleMs, borrowedReads: true });
    reader.conn = conn;
    conn.receiveEarly(Buffer.concat([head, taken.early]));
    return conn;
  }

  private async onWebSocket(
    req: IncomingMessage,
    socket: Duplex,
    head: Buffer,
    pending: PendingRequest,
    idleMs: number,
  ): Promise<void> {
    const offered = headerList(req, 'sec-websocket-protocol');
    const table: Record<string, ChannelProtocol> =
      pending.kind === 'portforward' ? WS_PORTFORWARD_PROTOCOLS : WS_COMMAND_PROTOCOLS;
    const tunnel = pending.kind === 'portforward' && offered.includes(WS_SPDY_TUNNEL_PROTOCOL);
    const chosen = tunnel ? WS_SPDY_TUNNEL_PROTOCOL : offered.find((p) => p in table);
    if (offered.length > 0 && chosen === undefined) {
      rawResponse(
        socket,
        400,
        'Bad Request',
        [],
        `requested protocol(s) are not supported: [${offered.join(' ')}]; supports [${[...Object.keys(table), ...(pending.kind === 'portforward' ? [WS_SPDY_TUNNEL_PROTOCOL] : [])].join(' ')}]\n`,
      );
      return;
    }
    const resolved = await this.resolve(pending).catch((err: unknown) => err as Error);
    if (resolved instanceof Error) {
      const [code, reason] = httpCodeOf(resolved);
      rawResponse(socket, code, reason, [], `${resolved.message}\n`);
      return;
    }
    // ws rejects subprotocol names with '/' (SPDY/3.1+portforward.k8s.io), so
    // berth negotiates itself and adds the answer to the response headers.
    delete req.headers['sec-websocket-protocol'];
    const addProtocol = (headers: string[], request: IncomingMessage) => {
      if (request === req && chosen) headers.push(`Sec-WebSocket-Protocol: ${chosen}`);
    };
    this.websockets ??= import('ws').then((ws) => ({
      wss: new ws.WebSocketServer({ noServer: true, perMessageDeflate: false, maxPayload: 64 * 1024 * 1024 }),
      toStream: ws.createWebSocketStream,
    }));
    const { wss, toStream } = await this.websockets;
    wss.on('headers', addProtocol);
    const ws = await new Promise<WebSocket | undefined>((resolve) => {
      // A failed handshake never calls back; the socket closes instead.
      const onClose = () => resolve(undefined);
      socket.once('close', onClose);
      wss.handleUpgrade(req, socket, head, (client) => {
        socket.off('close', onClose);
        resolve(client);
      });
    }).finally(() => wss.off('headers', addProtocol));
    if (!ws) return;
    const raw = socket as Socket;
    raw.setNoDelay?.(true);
    raw.setTimeout?.(idleMs, () => ws.terminate());
    ws.on('error', () => undefined);
    const protocolName = chosen ?? 'channel.k8s.io';
    if (tunnel) {
      const duplex = toStream(ws);
      duplex.on('error', () => undefined);
      const conn = new SpdyConnection(duplex, { role: 'server' });
      await this.serve(pending, resolved, 'websocket', protocolName, {
        command: () => Promise.reject(new Error('unreachable')),
        portForward: (target) =>
          serveSpdyPortForward(conn, {
            podSandboxId: (pending as { podSandboxId: string }).podSandboxId,
            target,
            creationTimeoutMs: STREAM_CREATION_TIMEOUT_MS,
            log: this.options.log,
          }),
      });
      return;
    }
    const channels = new ChannelSocket(ws, table[protocolName] ?? WS_COMMAND_PROTOCOLS['channel.k8s.io']);
    await this.serve(pending, resolved, 'websocket', protocolName, {
      command: (choice) => Promise.resolve(wsCommandStreams(channels, choice)),
      portForward: (target) => {
        const ports =
          pending.kind === 'portforward' && pending.ports.length > 0 ? pending.ports : queryPorts(req);
        return serveWsPortForward(channels, ports, {
          podSandboxId: (pending as { podSandboxId: string }).podSandboxId,
          target,
          log: this.options.log,
        });
      },
    });
  }

  private async resolve(pending: PendingRequest) {
    const backend = this.options.backend;
    switch (pending.kind) {
      case 'exec':
        return backend.resolveExec(pending.containerId);
      case 'attach':
        return backend.resolveAttach(pending.containerId);
      case 'portforward':
        return backend.resolvePortForward(pending.podSandboxId);
    }
  }

  private async serve(
    pending: PendingRequest,
    resolved: Awaited<ReturnType<StreamServer['resolve']>>,
    transport: 'spdy' | 'websocket',
    protocol: string,
    adapters: {
      command: (choice: StreamChoice) => Promise<CommandStreams>;
      portForward: (target: { netnsPath: string }) => Promise<void>;
    },
  ): Promise<void> {
    const started = Date.now();
    const log = this.options.log.child({ kind: pending.kind, transport, protocol });
    if (pending.kind === 'portforward') {
      await adapters.portForward(resolved as { netnsPath: string });
      log.debug(
        { podSandboxId: pending.podSandboxId, ms: Date.now() - started },
        'port forward session ended',
      );
      return;
    }
    let streams: CommandStreams;
    try {
      streams = await adapters.command(pending);
    } catch (err) {
      log.debug(
        { containerId: pending.containerId, err: errorMessage(err) },
        'stream session not established',
      );
      return;
    }
    const outcome =
      pending.kind === 'exec'
        ? await runExec(resolved as Parameters<typeof runExec>[0], pending, streams, log)
        : await runAttach(resolved as Parameters<typeof runAttach>[0], pending, streams, log);
    log.debug(
      {
        containerId: pending.containerId,
        ms: Date.now() - started,
        ...(outcome.kind === 'exit' ? { exitCode: outcome.exitCode } : { failed: true }),
      },
      `${pending.kind} session ended`,
    );
  }
}

function pick(r: { tty: boolean; stdin: boolean; stdout: boolean; stderr: boolean }) {
  return { tty: r.tty, stdin: r.stdin, stdout: r.stdout, stderr: r.stderr };
}

function queryPorts(req: IncomingMessage): number[] {
  const url = new URL(req.url ?? '/', 'http://x');
  return url.searchParams
    .getAll('ports')
    .flatMap((v) => v.split(','))
    .map(Number)
    .filter((p) => Number.isInteger(p) && p >= 1 && p <= 65535);
}
