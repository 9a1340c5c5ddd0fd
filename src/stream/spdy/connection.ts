/**
 * A SPDY/3.1 connection over an upgraded HTTP socket, as Kubernetes clients
 * (moby/spdystream) speak it: streams opened with SYN_STREAM and answered with
 * SYN_REPLY, DATA with FIN for half-close, RST_STREAM to abort, PING echoed,
 * GOAWAY to finish. Those clients send no flow-control frames, so SETTINGS and
 * WINDOW_UPDATE are accepted and ignored; back-pressure comes from TCP
 * (reading pauses while a stream's consumer is full).
 */
import { Duplex, type Readable, type Writable } from 'node:stream';
import { EventEmitter } from 'node:events';
import {
  FLAG_FIN,
  FLAG_UNIDIRECTIONAL,
  FrameParser,
  RstStatus,
  SpdyProtocolError,
  dataFrameHeader,
  encodeFrame,
  ownFrame,
  type Frame,
} from './frames.js';
import { HeaderCodec, type SpdyHeaders } from './headers.js';

/** DATA frames berth sends are at most this long (a port-forward read is one frame). */
const MAX_DATA_FRAME = 256 * 1024;

/**
 * Bytes for SpdyStream.relay. `consume` hands over each chunk; a chunk is the
 * consumer's until it returns true or, when it returns false, until it calls
 * `resume()` (the source may reuse its buffer after that). `output` ends when
 * the source has no more.
 */
export interface RelaySource {
  consume(consumer: (bytes: Buffer) => boolean): void;
  resume(): void;
  output: Readable;
}

/** A plain readable as a RelaySource (its chunks are never reused). */
export function readableSource(readable: Readable): RelaySource {
  return {
    output: readable,
    consume(consumer) {
      readable.on('data', (chunk: Buffer) => {
        if (!consumer(chunk)) readable.pause();
      });
    },
    resume: () => readable.resume(),
  };
}

export class SpdyStream extends Duplex {
  /** Headers of the SYN_STREAM (or, for streams we opened, of the SYN_REPLY). */
  headers: SpdyHeaders;
  private remoteReset = false;
  private localFinSent = false;
  /** Where the peer's bytes go when the stream relays (see relay). */
  private sink?: Writable;
  private sinkFull = false;
  private finReceived = false;

  constructor(
    private readonly connection: SpdyConnection,
    readonly id: number,
    headers: SpdyHeaders,
  ) {
    super({ allowHalfOpen: true, readableHighWaterMark: 1024 * 1024, writableHighWaterMark: 256 * 1024 });
    this.headers = headers;
  }

  /** First value of a header of this stream. */
  header(name: string): string | undefined {
    return this.headers.get(name.toLowerCase())?.[0];
  }

  override _read(): void {
    this.connection.streamWantsData(this);
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    if (this.remoteReset || this.connection.closed) return callback();
    this.connection.writeData(this.id, chunk, false, callback);
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.sendFin();
    callback();
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.connection.forget(this);
    callback(error);
  }

  /**
   * Copies bytes both ways between this stream and a socket, straight from
   * frame to socket and socket to frame: the stream's own buffers, and the
   * stream machinery that `pipe` runs per chunk each way, are left out of the
   * data path (port-forward moves bulk data through here). The stream still
   * ends, finishes and closes as if piped: the peer's FIN ends the socket's
   * writing side, the socket's end sends FIN.
   */
  relay(source: RelaySource, sink: Writable): void {
    // Bytes (and the FIN) that came before the relay go first, in order.
    for (let early = this.read() as Buffer | null; early !== null; early = this.read() as Buffer | null) {
      this.sinkFull = !sink.write(early);
    }
    if (this.finReceived) sink.end();
    this.sink = sink;
    sink.on('drain', () => {
      if (!this.sinkFull) return;
      this.sinkFull = false;
      this.connection.streamWantsData(this);
    });
    // Nothing is pushed but the end, which must still be read for 'end' to come.
    this.resume();
    if (!this.sinkFull) this.connection.streamWantsData(this);
    // A chunk the socket could not take at once stays lent until written.
    let lent = false;
    const release = () => {
      if (!lent) return;
      lent = false;
      source.resume();
    };
    source.consume((bytes) => {
      if (this.remoteReset || this.connection.closed || this.writableEnded) return true;
      if (this.connection.sendData(this.id, bytes, release)) return true;
      lent = true;
      return false;
    });
    source.output.once('end', () => this.end());
  }

  /** Sends RST_STREAM and discards the stream. */
  reset(status: number = RstStatus.CANCEL): void {
    if (!this.remoteReset && !this.connection.closed)
      this.connection.sendFrame({ type: 'rst_stream', streamId: this.id, status });
    this.remoteReset = true;
    this.destroy();
  }

  /**
   * @internal a DATA frame (or FIN) from the peer. `borrowed`: the bytes lie
   * in the connection's reused read buffer (see SpdyConnection.receiveBorrowed).
   */
  receive(data: Buffer, fin: boolean, borrowed = false): void {
    if (this.readableEnded || this.destroyed) return;
    if (fin) this.finReceived = true;
    if (this.sink) {
      if (data.length > 0) {
        let written = false;
        let lent = false;
        const full = !this.sink.write(
          data,
          borrowed
            ? () => {
                written = true;
                if (lent) this.connection.returned();
              }
            : undefined,
        );
        // Still queued in the socket: the read buffer may not be reused before it leaves.
        if (borrowed && !written && this.sink.writableLength > 0) {
          lent = true;
          this.connection.lent();
        }
        if (full && !this.sinkFull) {
          this.sinkFull = true;
          this.connection.streamFull(this);
        }
      }
      if (fin) {
        this.sink.end();
        this.push(null);
      }
      return;
    }
    if (data.length > 0 && !this.push(borrowed ? Buffer.from(data) : data)) this.connection.streamFull(this);
    if (fin) this.push(null);
  }

  /** @internal the peer reset the stream. */
  receiveReset(): void {
    this.remoteReset = true;
    if (!this.readableEnded) this.push(null);
    this.emit('reset');
    this.destroy();
  }

  /** @internal */
  sendFin(): void {
    if (this.localFinSent || this.remoteReset || this.connection.closed) return;
    this.localFinSent = true;
    this.connection.writeData(this.id, Buffer.alloc(0), true, () => undefined);
  }
}

export interface SpdyConnectionOptions {
  role: 'server' | 'client';
  /**
   * The socket's reads come through receiveBorrowed (a socket that reads
   * into one buffer of its own), not its 'data' events.
   */
  borrowedReads?: boolean;
  /** Close the connection after this long without any traffic (0: never). */
  idleTimeoutMs?: number;
}

/**
 * Events: 'stream' (SpdyStream, a stream the peer opened), 'close', 'error'
 * (protocol errors; the connection is closed after).
 */
export class SpdyConnection extends EventEmitter {
  private readonly parser = new FrameParser(undefined, true);
  private readonly codec = new HeaderCodec();
  private readonly streams = new Map<number, SpdyStream>();
  private readonly replyWaiters = new Map<number, (headers: SpdyHeaders | Error) => void>();
  private readonly full = new Set<SpdyStream>();
  private readonly drainWaiters: (() => void)[] = [];
  /** Frames waiting behind an asynchronous header decompression, in order. */
  private readonly queue: Frame[] = [];
  private decoding = false;
  /** Chunks of the current borrowed read still queued in a stream's socket. */
  private lentChunks = 0;
  private onReturned?: () => void;
  private nextStreamId: number;
  private lastPeerStreamId = 0;
  private closing = false;
  closed = false;

  constructor(
    private readonly socket: Duplex,
    private readonly options: SpdyConnectionOptions,
  ) {
    super();
    this.nextStreamId = options.role === 'client' ? 1 : 2;
    if (!options.borrowedReads) socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('end', () => this.shutdown());
    socket.on('close', () => this.shutdown());
    socket.on('error', () => this.shutdown());
    socket.on('drain', () => {
      for (const waiter of this.drainWaiters.splice(0)) waiter();
    });
    const timed = socket as Duplex & { setTimeout?: (ms: number, cb?: () => void) => void };
    if (options.idleTimeoutMs && typeof timed.setTimeout === 'function') {
      timed.setTimeout(options.idleTimeoutMs, () => {
        this.emit('idle');
        this.close();
      });
    }
  }

  /** Opens a stream (the client side; tests and benchmarks use it). */
  openStream(headers: Record<string, string>, fin = false): Promise<SpdyStream> {
    if (this.closed || this.closing) return Promise.reject(new Error('SPDY connection is closed'));
    const id = this.nextStreamId;
    this.nextStreamId += 2;
    const stream = new SpdyStream(this, id, new Map());
    this.streams.set(id, stream);
    this.sendFrame({
      type: 'syn_stream',
      streamId: id,
      associatedId: 0,
      priority: 0,
      flags: fin ? FLAG_FIN : 0,
      headerBlock: this.codec.compress(Object.entries(headers)),
    });
    return new Promise((resolve, reject) => {
      this.replyWaiters.set(id, (reply) => {
        if (reply instanceof Error) return reject(reply);
        stream.headers = reply;
        resolve(stream);
      });
    });
  }

  /** GOAWAY, then ends the socket once queued writes are out. */
  close(): void {
    if (this.closing || this.closed) return;
    this.closing = true;
    this.sendFrame({ type: 'goaway', lastGoodStreamId: this.lastPeerStreamId, status: 0 });
    this.socket.end();
    // A peer that never closes its side must not keep the socket forever.
    setTimeout(() => this.socket.destroy(), 5000).unref();
  }

  /** Tears down at once (no GOAWAY). */
  destroy(): void {
    this.socket.destroy();
    this.shutdown();
  }

  sendFrame(frame: Frame): void {
    if (this.closed || this.socket.writableEnded) return;
    this.socket.write(encodeFrame(frame));
  }

  /** @internal Sends data as DATA frames; the callback waits for the drain when the socket is full. */
  writeData(streamId: number, data: Buffer, fin: boolean, callback: () => void): void {
    if (this.closed || this.socket.writableEnded) return callback();
    let ok = true;
    if (data.length === 0) {
      ok = this.socket.write(dataFrameHeader(streamId, fin ? FLAG_FIN : 0, 0));
    }
    // Header and payload leave in one write (writev) rather than two.
    this.socket.cork();
    for (let offset = 0; offset < data.length; offset += MAX_DATA_FRAME) {
      const piece = data.subarray(offset, Math.min(offset + MAX_DATA_FRAME, data.length));
      const last = offset + piece.length >= data.length;
      this.socket.write(dataFrameHeader(streamId, fin && last ? FLAG_FIN : 0, piece.length));
      ok = this.socket.write(piece);
    }
    this.socket.uncork();
    if (ok) callback();
    else this.drainWaiters.push(callback);
  }

  /**
   * @internal Sends bytes as DATA frames. True when the socket has taken all
   * of them (nothing refers to `data` any more); otherwise `onWritten` says
   * when they have left.
   */
  sendData(streamId: number, data: Buffer, onWritten: () => void): boolean {
    if (this.closed || this.socket.writableEnded) return true;
    this.socket.cork();
    for (let offset = 0; offset < data.length; offset += MAX_DATA_FRAME) {
      const piece = data.subarray(offset, Math.min(offset + MAX_DATA_FRAME, data.length));
      this.socket.write(dataFrameHeader(streamId, 0, piece.length));
      if (offset + piece.length >= data.length) this.socket.write(piece, onWritten);
      else this.socket.write(piece);
    }
    this.socket.uncork();
    return this.socket.writableLength === 0;
  }

  /**
   * One read of a socket that reads into a buffer it reuses. Returns true
   * when nothing refers to `bytes` any more; false when a relayed piece still
   * waits in a stream's socket, and then `onReturned` is called once none
   * does (the socket must not read into the buffer before: it is paused).
   * Whatever outlives the call (an unfinished frame, frames behind a header
   * decompression, bytes for a stream's own buffer) is copied.
   */
  receiveBorrowed(bytes: Buffer, onReturned: () => void): boolean {
    this.onData(bytes, true);
    this.parser.ownPending();
    for (let i = 0; i < this.queue.length; i++) this.queue[i] = ownFrame(this.queue[i]);
    if (this.lentChunks === 0) return true;
    this.onReturned = onReturned;
    return false;
  }

  /** Bytes read before the connection existed (an upgrade's head). */
  receiveEarly(bytes: Buffer): void {
    if (bytes.length > 0) this.onData(bytes);
  }

  /** @internal a stream's socket holds a piece of the current borrowed read. */
  lent(): void {
    this.lentChunks++;
  }

  /** @internal ... and has written it. */
  returned(): void {
    if (--this.lentChunks > 0) return;
    const onReturned = this.onReturned;
    this.onReturned = undefined;
    onReturned?.();
  }

  /** @internal a stream's buffer is full: stop reading the socket. */
  streamFull(stream: SpdyStream): void {
    this.full.add(stream);
    this.socket.pause();
  }

  /** @internal a stream's consumer wants more. */
  streamWantsData(stream: SpdyStream): void {
    if (this.full.delete(stream) && this.full.size === 0 && !this.closed && this.lentChunks === 0)
      this.socket.resume();
  }

  /** Reads again once no stream is full (after receiveBorrowed returned false). */
  resumeReading(): void {
    if (this.full.size === 0 && !this.closed && this.lentChunks === 0) this.socket.resume();
  }

  /** @internal */
  forget(stream: SpdyStream): void {
    this.streams.delete(stream.id);
    this.streamWantsData(stream);
  }

  private onData(chunk: Buffer, borrowed = false): void {
    let frames: Frame[];
    try {
      frames = this.parser.push(chunk);
    } catch (err) {
      return this.fail(err);
    }
    for (const frame of frames) {
      // Header blocks are decompressed off the thread: never from a borrowed buffer.
      this.queue.push(borrowed && frame.type !== 'data' ? ownFrame(frame) : frame);
    }
    this.drain(borrowed);
  }

  private drain(borrowed = false): void {
    while (!this.decoding && this.queue.length > 0 && !this.closed) {
      const frame = this.queue.shift()!;
      if (frame.type === 'syn_stream' || frame.type === 'syn_reply' || frame.type === 'headers') {
        this.decoding = true;
        this.codec.decompress(frame.headerBlock).then(
          (headers) => {
            this.decoding = false;
            this.onHeaders(frame, headers);
            this.drain();
          },
          (err: unknown) => this.fail(err),
        );
        return;
      }
      this.onFrame(frame, borrowed);
    }
  }

  private onHeaders(frame: Frame, headers: SpdyHeaders): void {
    if (frame.type === 'syn_stream') {
      const id = frame.streamId;
      if (id === 0 || this.streams.has(id) || id <= this.lastPeerStreamId) {
        this.sendFrame({ type: 'rst_stream', streamId: id, status: RstStatus.PROTOCOL_ERROR });
        return;
      }
      this.lastPeerStreamId = id;
      if (this.closing) {
        this.sendFrame({ type: 'rst_stream', streamId: id, status: RstStatus.REFUSED_STREAM });
        return;
      }
      const stream = new SpdyStream(this, id, headers);
      this.streams.set(id, stream);
      this.sendFrame({
        type: 'syn_reply',
        streamId: id,
        flags: 0,
        headerBlock: this.codec.compress([]),
      });
      if (frame.flags & FLAG_FIN) stream.receive(Buffer.alloc(0), true);
      if (frame.flags & FLAG_UNIDIRECTIONAL) stream.sendFin();
      this.emit('stream', stream);
    } else if (frame.type === 'syn_reply') {
      const waiter = this.replyWaiters.get(frame.streamId);
      this.replyWaiters.delete(frame.streamId);
      waiter?.(headers);
      if (frame.flags & FLAG_FIN) this.streams.get(frame.streamId)?.receive(Buffer.alloc(0), true);
    } else if (frame.type === 'headers') {
      const stream = this.streams.get(frame.streamId);
      if (stream) {
        for (const [name, values] of headers) stream.headers.set(name, values);
        if (frame.flags & FLAG_FIN) stream.receive(Buffer.alloc(0), true);
      }
    }
  }

  private onFrame(frame: Frame, borrowed: boolean): void {
    switch (frame.type) {
      case 'data': {
        const stream = this.streams.get(frame.streamId);
        // Data for a stream already gone is dropped (it may have been reset).
        stream?.receive(frame.data, (frame.flags & FLAG_FIN) !== 0, borrowed);
        break;
      }
      case 'rst_stream': {
        const waiter = this.replyWaiters.get(frame.streamId);
        this.replyWaiters.delete(frame.streamId);
        waiter?.(new Error(`SPDY stream ${frame.streamId} was refused (status ${frame.status})`));
        this.streams.get(frame.streamId)?.receiveReset();
        break;
      }
      case 'ping':
        // Echo pings the peer started (their IDs have the peer's parity).
        if ((frame.id % 2 === 1) === (this.options.role === 'server')) this.sendFrame(frame);
        break;
      case 'goaway':
        this.close();
        break;
      case 'settings':
      case 'window_update':
      case 'unknown':
        break;
      default:
        break;
    }
  }

  private fail(err: unknown): void {
    const error = err instanceof Error ? err : new SpdyProtocolError(String(err));
    if (this.listenerCount('error') > 0) this.emit('error', error);
    this.sendFrame({ type: 'goaway', lastGoodStreamId: this.lastPeerStreamId, status: 1 });
    this.socket.end();
    this.shutdown();
  }

  private shutdown(): void {
    if (this.closed) return;
    this.closed = true;
    this.queue.length = 0;
    for (const waiter of this.replyWaiters.values()) waiter(new Error('SPDY connection closed'));
    this.replyWaiters.clear();
    for (const waiter of this.drainWaiters.splice(0)) waiter();
    for (const stream of [...this.streams.values()]) stream.receiveReset();
    this.codec.close();
    this.emit('close');
  }
}
