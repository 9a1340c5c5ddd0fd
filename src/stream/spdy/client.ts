/**
 * The client side of a SPDY/3.1 upgrade, as kubelet's clients do it: an HTTP
 * request with `Upgrade: SPDY/3.1` and the offered X-Stream-Protocol-Version
 * values, then SPDY on the same socket. Used by tests and benchmarks (and
 * handy for debugging a streaming server).
 */
import { connect as netConnect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { SpdyConnection, type SpdyStream } from './connection.js';

export interface SpdyUpgrade {
  /** HTTP status of the response (101 on success). */
  status: number;
  /** The response head (status line and headers). */
  head: string;
  /** The negotiated protocol ('' if the server named none). */
  protocol: string;
  /** The connection, on 101. */
  conn?: SpdyConnection;
}

export async function spdyUpgrade(
  url: string,
  protocols: string[],
  options: { rejectUnauthorized?: boolean; method?: string } = {},
): Promise<SpdyUpgrade> {
  const u = new URL(url);
  const tls = u.protocol === 'https:';
  const socket: Socket = tls
    ? tlsConnect({
        host: u.hostname,
        port: Number(u.port),
        rejectUnauthorized: options.rejectUnauthorized ?? true,
      })
    : netConnect(Number(u.port), u.hostname);
  await new Promise<void>((resolve, reject) => {
    socket.once(tls ? 'secureConnect' : 'connect', () => resolve());
    socket.once('error', reject);
  });
  socket.setNoDelay(true);
  const lines = [
    `${options.method ?? 'POST'} ${u.pathname}${u.search} HTTP/1.1`,
    `Host: ${u.host}`,
    'Connection: Upgrade',
    'Upgrade: SPDY/3.1',
    ...protocols.map((p) => `X-Stream-Protocol-Version: ${p}`),
  ];
  socket.write(`${lines.join('\r\n')}\r\n\r\n`);
  let buffered = Buffer.alloc(0);
  const head = await new Promise<string>((resolve, reject) => {
    const onData = (chunk: Buffer) => {
      buffered = Buffer.concat([buffered, chunk]);
      const end = buffered.indexOf('\r\n\r\n');
      if (end < 0) return;
      socket.off('data', onData);
      socket.pause();
      const rest = buffered.subarray(end + 4);
      if (rest.length) socket.unshift(rest);
      resolve(buffered.subarray(0, end).toString());
    };
    socket.on('data', onData);
    socket.once('error', reject);
    socket.once('end', () => resolve(buffered.toString()));
  });
  const status = Number(/^HTTP\/1\.1 (\d+)/.exec(head)?.[1] ?? 0);
  const protocol = /^X-Stream-Protocol-Version: *(.*)$/im.exec(head)?.[1]?.trim() ?? '';
  if (status !== 101) {
    socket.destroy();
    return { status, head, protocol };
  }
  const conn = new SpdyConnection(socket, { role: 'client' });
  socket.resume();
  return { status, head, protocol, conn };
}

/** Reads a stream to its end as text. */
export async function readText(stream: SpdyStream): Promise<string> {
  let text = '';
  for await (const chunk of stream) text += (chunk as Buffer).toString();
  return text;
}
