/**
 * portforward.k8s.io over SPDY: for each forwarded connection the client
 * opens an `error` and a `data` stream carrying the same `requestID` and the
 * `port`. Once both exist berth connects to the port inside the pod's network
 * namespace and copies both ways; failures are reported as text on the error
 * stream. Any number of pairs may be live on one connection.
 */
import type { Logger } from '../log.js';
import type { SpdyConnection, SpdyStream } from './spdy/connection.js';
import { HALF_CLOSE_GRACE_MS, dialInNetns } from './netns-dial.js';
import type { PortForwardTarget } from './types.js';

export const SPDY_PORTFORWARD_PROTOCOLS = ['portforward.k8s.io'];

export interface PortForwardOptions {
  podSandboxId: string;
  target: PortForwardTarget;
  /** How long a pair may stay incomplete. */
  creationTimeoutMs: number;
  log: Logger;
}

interface Pair {
  data?: SpdyStream;
  error?: SpdyStream;
  timer: NodeJS.Timeout;
}

export function parsePort(value: string | undefined): number | undefined {
  if (!value || !/^\d{1,5}$/.test(value)) return undefined;
  const port = Number(value);
  return port >= 1 && port <= 65535 ? port : undefined;
}

/** Serves pairs until the connection closes. */
export function serveSpdyPortForward(conn: SpdyConnection, options: PortForwardOptions): Promise<void> {
  const pairs = new Map<string, Pair>();
  const relays = new Set<() => void>();

  const requestId = (stream: SpdyStream, type: string): string => {
    const id = stream.header('requestid');
    if (id) return id;
    // Old clients send no requestID: their error and data streams have consecutive odd IDs.
    return String(type === 'data' ? stream.id - 2 : stream.id);
  };

  const start = (data: SpdyStream, error: SpdyStream) => {
    error.resume();
    error.on('error', () => undefined);
    data.on('error', () => undefined);
    const port = parsePort(data.header('port'));
    if (port === undefined) {
      error.end(`invalid port ${JSON.stringify(data.header('port') ?? '')}`);
      data.reset();
      return;
    }
    const report = (failure: string) => {
      options.log.debug({ port, podSandboxId: options.podSandboxId, failure }, 'port forward failed');
      if (!error.destroyed)
        error.write(`error forwarding port ${port} to pod ${options.podSandboxId}, uid : ${failure}`);
    };
    void dialInNetns(options.target.netnsPath, port).then(
      (relay) => {
        if (data.destroyed) return relay.kill();
        relays.add(relay.kill);
        data.relay(relay, relay.input);
        // A reset stream means the client gave up on this connection.
        data.once('close', relay.kill);
        void relay.settled(HALF_CLOSE_GRACE_MS).then((failure) => {
          relays.delete(relay.kill);
          if (failure) report(failure);
          if (!error.destroyed) error.end();
        });
      },
      (err: unknown) => {
        report(err instanceof Error ? err.message : String(err));
        if (!error.destroyed) error.end();
        if (!data.destroyed) data.end();
      },
    );
  };

  const onStream = (stream: SpdyStream) => {
    const type = stream.header('streamtype') ?? '';
    if (type !== 'data' && type !== 'error') {
      stream.reset();
      return;
    }
    const id = requestId(stream, type);
    let pair = pairs.get(id);
    if (!pair) {
      const timer = setTimeout(() => {
        const stale = pairs.get(id);
        pairs.delete(id);
        stale?.data?.reset();
        stale?.error?.reset();
      }, options.creationTimeoutMs);
      timer.unref();
      pair = { timer };
      pairs.set(id, pair);
    }
    if (pair[type]) {
      stream.reset();
      return;
    }
    pair[type] = stream;
    if (pair.data && pair.error) {
      clearTimeout(pair.timer);
      pairs.delete(id);
      start(pair.data, pair.error);
    }
  };

  conn.on('stream', onStream);
  return new Promise((resolve) => {
    const finish = () => {
      for (const pair of pairs.values()) clearTimeout(pair.timer);
      pairs.clear();
      for (const kill of relays) kill();
      resolve();
    };
    if (conn.closed) finish();
    else conn.once('close', finish);
  });
}
