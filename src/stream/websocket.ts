/**
 * Kubernetes' channel protocols over WebSocket. Every message carries one
 * channel: binary protocols prefix the data with the channel byte; base64
 * protocols send text, the channel as an ASCII digit then the data in base64.
 * v5.channel.k8s.io adds the close signal: a message [255, channel] says the
 * sender will write no more on that channel (stdin's EOF).
 */
import { PassThrough, Writable } from 'node:stream';
import type { WebSocket } from 'ws';

export const CLOSE_SIGNAL = 255;

export interface ChannelProtocol {
  base64: boolean;
  closeSignal: boolean;
  /** Error channel carries a JSON Status (v4 and later). */
  jsonStatus: boolean;
}

/** remotecommand protocols berth accepts over WebSocket, in preference order. */
export const WS_COMMAND_PROTOCOLS: Record<string, ChannelProtocol> = {
  'v5.channel.k8s.io': { base64: false, closeSignal: true, jsonStatus: true },
  'v4.channel.k8s.io': { base64: false, closeSignal: false, jsonStatus: true },
  'v4.base64.channel.k8s.io': { base64: true, closeSignal: false, jsonStatus: true },
  'channel.k8s.io': { base64: false, closeSignal: false, jsonStatus: false },
  'base64.channel.k8s.io': { base64: true, closeSignal: false, jsonStatus: false },
};

/** Port-forward protocols over WebSocket ('' is a client that named none). */
export const WS_PORTFORWARD_PROTOCOLS: Record<string, ChannelProtocol> = {
  'v4.channel.k8s.io': { base64: false, closeSignal: false, jsonStatus: false },
  'v4.base64.channel.k8s.io': { base64: true, closeSignal: false, jsonStatus: false },
  'channel.k8s.io': { base64: false, closeSignal: false, jsonStatus: false },
};

/** SPDY framed inside WebSocket binary messages (kubectl port-forward's tunnel). */
export const WS_SPDY_TUNNEL_PROTOCOL = 'SPDY/3.1+portforward.k8s.io';

export function encodeChannelMessage(
  protocol: ChannelProtocol,
  channel: number,
  data: Buffer,
): Buffer | string {
  if (protocol.base64) return String.fromCharCode(48 + channel) + data.toString('base64');
  const out = Buffer.allocUnsafe(data.length + 1);
  out[0] = channel;
  data.copy(out, 1);
  return out;
}

export type ChannelMessage =
  { type: 'data'; channel: number; data: Buffer } | { type: 'close'; channel: number } | { type: 'invalid' };

export function decodeChannelMessage(
  protocol: ChannelProtocol,
  raw: Buffer | string,
  isBinary: boolean,
): ChannelMessage {
  if (protocol.base64 && !isBinary) {
    const text = raw.toString();
    if (text.length < 1) return { type: 'invalid' };
    const channel = text.charCodeAt(0) - 48;
    if (channel < 0 || channel > 9) return { type: 'invalid' };
    return { type: 'data', channel, data: Buffer.from(text.slice(1), 'base64') };
  }
  const bytes = Buffer.isBuffer(raw) ? raw : Buffer.from(raw);
  if (bytes.length < 1) return { type: 'invalid' };
  if (protocol.closeSignal && bytes[0] === CLOSE_SIGNAL) {
    return bytes.length >= 2 ? { type: 'close', channel: bytes[1] } : { type: 'invalid' };
  }
  return { type: 'data', channel: bytes[0], data: bytes.subarray(1) };
}

/** The channels of one WebSocket: readers per channel, writers per channel. */
export class ChannelSocket {
  private readonly readers = new Map<number, PassThrough>();
  /** Set by close(): what the client still sends is dropped. */
  private closing = false;

  constructor(
    readonly ws: WebSocket,
    readonly protocol: ChannelProtocol,
  ) {
    ws.on('message', (raw: Buffer | Buffer[] | ArrayBuffer, isBinary: boolean) => {
      const bytes = Array.isArray(raw) ? Buffer.concat(raw) : Buffer.isBuffer(raw) ? raw : Buffer.from(raw);
      const message = decodeChannelMessage(protocol, isBinary ? bytes : bytes.toString(), isBinary);
      if (message.type === 'data') {
        const reader = this.readers.get(message.channel);
        if (reader && !this.closing && !reader.writableEnded && message.data.length > 0) {
          // No per-channel flow control in the protocol: pause the socket while a reader is full.
          if (!reader.write(message.data)) {
            ws.pause();
            reader.once('drain', () => ws.resume());
          }
        }
      } else if (message.type === 'close') {
        this.readers.get(message.channel)?.end();
      }
    });
    ws.on('close', () => {
      for (const reader of this.readers.values()) reader.end();
    });
  }

  /** What the client sends on a channel. Ends on the close signal or when the socket closes. */
  reader(channel: number): PassThrough {
    let reader = this.readers.get(channel);
    if (!reader) {
      reader = new PassThrough({ highWaterMark: 1024 * 1024 });
      this.readers.set(channel, reader);
    }
    return reader;
  }

  /** Sends one message; resolves when it is handed to the socket. */
  send(channel: number, data: Buffer): Promise<void> {
    if (this.ws.readyState !== this.ws.OPEN) return Promise.resolve();
    return new Promise((resolve) =>
      this.ws.send(encodeChannelMessage(this.protocol, channel, data), () => resolve()),
    );
  }

  /** A writable that sends each chunk as a message on the channel. */
  writer(channel: number): Writable {
    return new Writable({
      highWaterMark: 256 * 1024,
      write: (chunk: Buffer, _encoding, callback) => {
        this.send(channel, chunk).then(() => callback(), callback);
      },
    });
  }

  close(code = 1000): void {
    this.closing = true;
    // A reader nobody empties any more (the process is gone) may have paused the socket:
    // keep reading, so the client's close frame behind its unsent stdin gets through.
    for (const reader of this.readers.values()) reader.resume();
    this.ws.resume();
    if (this.ws.readyState === this.ws.OPEN || this.ws.readyState === this.ws.CONNECTING) this.ws.close(code);
  }
}
