/**
 * A small HTTP/1.1 client for layer blobs. The response head is parsed here
 * and the body is read by the socket straight into buffers its consumer
 * hands out (`onread` with a buffer per read), so a layer's bytes are not
 * copied between the kernel and the layer worker. undici copies every byte
 * into its parser's memory and out again and emits a chunk object per read:
 * 5-9x the CPU per byte of this path on loopback (bench/pull README); it
 * keeps serving manifests, configs and tokens. Connections are kept alive
 * between blobs of one origin, as undici's pools keep them: against a
 * distant registry a new TLS connection per layer would cost round trips.
 */
import net from 'node:net';
import tls from 'node:tls';

/** Where a consumer wants the body's bytes (see layer/ingest.ts). */
export interface DirectSink {
  /** Space for the next bytes: at least one byte long, valid until `filled`. */
  space(): Uint8Array;
  /** `n` bytes were placed at the start of the last `space()`. */
  filled(n: number): void;
  end(): void;
  error(err: Error): void;
}

/** A body that writes into its consumer's buffers; read once. */
export interface DirectSource {
  readonly direct: true;
  start(sink: DirectSink): void;
  pause(): void;
  resume(): void;
  /** Stops reading and closes the connection; a started sink hears `err` (if given). */
  destroy(err?: Error): void;
}

export interface Http1Body extends DirectSource {
  /** Content-Length, when the body is framed by one. */
  readonly length?: number;
  /** The whole body as text, at most `limit` bytes of it (error bodies). */
  text(limit?: number): Promise<string>;
}

export interface Http1Response {
  statusCode: number;
  /** Names lowercased; repeated fields as arrays. */
  headers: Record<string, string | string[] | undefined>;
  body: Http1Body;
}

export interface Http1Options {
  /** For https: URLs. */
  secureContext?: tls.SecureContext;
  rejectUnauthorized?: boolean;
  connectTimeoutMs?: number;
  signal?: AbortSignal;
}

/** A response head larger than this is refused (Node's own limit; registries send a few hundred bytes). */
const MAX_HEAD_BYTES = 16 * 1024;
/** A chunk-size line longer than this is refused (hex size plus extensions). */
const MAX_CHUNK_LINE = 4096;
const CR = 13;
const LF = 10;

export class Http1Error extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'Http1Error';
  }
}

type Framing =
  | { kind: 'length'; remaining: number }
  | { kind: 'chunked'; decoder: ChunkedDecoder }
  | { kind: 'close' }
  | { kind: 'none' };

/**
 * Sends `method url` with `headers` and resolves with the response head; the
 * body is read when the caller starts it (or discarded by `destroy`).
 * Network failures reject with the socket's error; a malformed answer with
 * an Http1Error.
 */
export async function http1Request(
  url: URL,
  method: 'GET' | 'HEAD',
  headers: Record<string, string>,
  options: Http1Options = {},
): Promise<Http1Response> {
  const head = requestHead(url, method, headers);
  const key = poolKey(url, options);
  for (;;) {
    const kept = Connection.take(key);
    try {
      return await new Promise<Http1Response>((resolve, reject) => {
        new Exchange(kept ?? new Connection(key, url, options), head, method, options, resolve, reject);
      });
    } catch (err) {
      // A server may close an idle connection just as it is reused; GETs are safe to send again.
      if (err instanceof StaleConnectionError && !options.signal?.aborted) continue;
      throw err;
    }
  }
}

function requestHead(url: URL, method: string, headers: Record<string, string>): string {
  const lines = [`${method} ${url.pathname}${url.search} HTTP/1.1`, `Host: ${url.host}`];
  for (const [name, value] of Object.entries(headers)) {
    // A value from elsewhere (a token server's answer) must not smuggle a header in.
    if (/[\r\n]/.test(name) || /[\r\n]/.test(value) || !/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(name)) {
      throw new Http1Error(`invalid request header ${JSON.stringify(name)}`);
    }
    if (name.toLowerCase() === 'host' || name.toLowerCase() === 'connection') continue;
    lines.push(`${name}: ${value}`);
  }
  lines.push('', '');
  return lines.join('\r\n');
}

/** Idle connections kept per origin (and trust); more are closed once their answer is read. */
const MAX_IDLE_PER_ORIGIN = 8;
/** An idle connection is closed after this (or sooner when the server says so). */
const IDLE_MS = 30_000;
const idle = new Map<string, Connection[]>();
const contextIds = new WeakMap<tls.SecureContext, number>();
let nextContextId = 1;

/** Connections to one origin with one trust may carry each other's requests. */
function poolKey(url: URL, options: Http1Options): string {
  if (url.protocol !== 'https:') return url.origin;
  let id = 0;
  if (options.secureContext) {
    id = contextIds.get(options.secureContext) ?? nextContextId++;
    contextIds.set(options.secureContext, id);
  }
  return `${url.origin}\0${id}\0${options.rejectUnauthorized ?? true}`;
}

/** Closes every idle kept-alive connection (shutdown; tests). */
export function closeIdleConnections(): void {
  for (const list of idle.values()) for (const conn of [...list]) conn.drop();
  idle.clear();
}

/** Idle kept-alive connections now (tests). */
export function idleConnectionCount(): number {
  let n = 0;
  for (const list of idle.values()) n += list.length;
  return n;
}

/** tls.connect takes `onread` as net.connect does (not in @types/node's TLS options). */
type TlsOptionsWithOnread = tls.ConnectionOptions & { onread: net.OnReadOpts };

/**
 * One socket, carrying one exchange at a time; between exchanges it waits
 * in the idle pool, still reading so that a close by the server is seen.
 */
class Connection {
  readonly socket: net.Socket;
  exchange?: Exchange;
  /** Requests it has carried, the current one included. */
  requests = 0;
  private connected = false;
  private readonly idleBuffer = Buffer.allocUnsafe(4096);
  private idleTimer?: NodeJS.Timeout;
  private connectTimer?: NodeJS.Timeout;
  private dropped = false;

  constructor(
    readonly key: string,
    url: URL,
    options: Http1Options,
  ) {
    const secure = url.protocol === 'https:';
    const port = Number(url.port) || (secure ? 443 : 80);
    const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
    const onread = {
      buffer: () => this.exchange?.nextBuffer() ?? this.idleBuffer,
      callback: (n: number, buf: Uint8Array) => this.onRead(n, buf),
    };
    this.socket = secure
      ? tls.connect(<TlsOptionsWithOnread>{
          host,
          port,
          servername: net.isIP(host) ? undefined : host,
          secureContext: options.secureContext,
          rejectUnauthorized: options.rejectUnauthorized ?? true,
          ALPNProtocols: ['http/1.1'],
          onread,
        })
      : net.connect({ host, port, onread });
    this.socket.setNoDelay(true);
    this.connectTimer = setTimeout(
      () => this.failWith(new Http1Error(`connect to ${url.host} timed out`)),
      options.connectTimeoutMs ?? 15_000,
    );
    this.socket.once(secure ? 'secureConnect' : 'connect', () => {
      this.connected = true;
      clearTimeout(this.connectTimer);
    });
    this.socket.on('error', (err) => this.failWith(err));
    this.socket.on('end', () => (this.exchange ? this.exchange.onEnd() : this.drop()));
    this.socket.on('close', () => {
      clearTimeout(this.connectTimer);
      this.failWith(new Http1Error('connection closed'));
    });
  }

  get reused(): boolean {
    return this.requests > 1;
  }

  private failWith(err: Error): void {
    const exchange = this.exchange;
    this.drop();
    exchange?.fail(err);
  }

  private onRead(n: number, buf: Uint8Array): boolean {
    const exchange = this.exchange;
    if (!exchange) {
      // Bytes while idle answer nothing that was asked: the connection is no good.
      this.drop();
      return false;
    }
    const keepReading = exchange.onRead(n, buf);
    // Put back into the pool by that read: read on, to see the server close it.
    if (this.exchange === undefined) return !this.dropped;
    return keepReading;
  }

  /** Carries `exchange` (a new connection, or one taken from the pool). */
  attach(exchange: Exchange): void {
    this.exchange = exchange;
    this.requests++;
    clearTimeout(this.idleTimer);
    this.socket.ref();
    if (this.connected && this.socket.isPaused()) this.socket.resume();
  }

  /** The exchange is over and left the connection clean: kept for the next one, or closed. */
  park(idleMs: number): void {
    this.exchange = undefined;
    const list = idle.get(this.key) ?? [];
    if (this.dropped || idleMs <= 0 || list.length >= MAX_IDLE_PER_ORIGIN) {
      this.drop();
      return;
    }
    list.push(this);
    idle.set(this.key, list);
    this.socket.unref();
    if (this.socket.isPaused()) this.socket.resume();
    this.idleTimer = setTimeout(() => this.drop(), idleMs);
    this.idleTimer.unref();
  }

  drop(): void {
    if (this.dropped) return;
    this.dropped = true;
    this.exchange = undefined;
    clearTimeout(this.idleTimer);
    clearTimeout(this.connectTimer);
    const list = idle.get(this.key);
    const at = list?.indexOf(this) ?? -1;
    if (list && at !== -1) {
      list.splice(at, 1);
      if (list.length === 0) idle.delete(this.key);
    }
    if (!this.socket.destroyed) this.socket.destroy();
  }

  static take(key: string): Connection | undefined {
    const list = idle.get(key);
    const conn = list?.pop();
    if (list?.length === 0) idle.delete(key);
    return conn;
  }
}

/** A kept-alive connection that failed before any byte of an answer: the request goes again on a new one. */
class StaleConnectionError extends Error {}

/** head: reading it; waiting: head given, body not started (socket paused); body: reading it. */
type Phase = 'head' | 'waiting' | 'body' | 'done';

class Exchange implements Http1Body {
  readonly direct = true;
  length?: number;
  private readonly socket: net.Socket;
  private phase: Phase = 'head';
  /** The head is read here; afterwards, the bytes of a read made while no sink space was set. */
  private readonly scratch = Buffer.allocUnsafe(MAX_HEAD_BYTES);
  private headUsed = 0;
  /** Some byte of the answer arrived (a reused connection that fails before is retried). */
  private answered = false;
  /** Body bytes that came with the head or before the sink started (already de-chunked). */
  private early: Buffer[] = [];
  private framing: Framing = { kind: 'close' };
  /** The connection may carry another request once this answer is read (ms it may idle), or 0. */
  private keepAliveMs = 0;
  /** Bytes arrived past the end of the answer: the connection is not clean. */
  private surplus = false;
  private sink?: DirectSink;
  private failure?: Error;
  private settled = false;
  private onAbort?: () => void;

  constructor(
    private readonly conn: Connection,
    head: string,
    private readonly method: 'GET' | 'HEAD',
    private readonly options: Http1Options,
    private readonly resolveHead: (r: Http1Response) => void,
    private readonly rejectHead: (e: Error) => void,
  ) {
    this.socket = conn.socket;
    conn.attach(this);
    const signal = options.signal;
    if (signal) {
      if (signal.aborted) {
        this.fail(abortReason(signal));
        return;
      }
      this.onAbort = () => this.fail(abortReason(signal));
      signal.addEventListener('abort', this.onAbort, { once: true });
    }
    this.socket.write(head);
  }

  /** The phase now (a call may have moved it on). */
  private current(): Phase {
    return this.phase;
  }

  /** The buffer the socket reads into next (asked for after every read). */
  nextBuffer(): Uint8Array {
    if (this.phase === 'body' && this.sink) return this.sink.space();
    return this.headUsed > 0 ? this.scratch.subarray(this.headUsed) : this.scratch;
  }

  onRead(n: number, buf: Uint8Array): boolean {
    if (this.phase === 'done') return false;
    this.answered = true;
    if (this.phase === 'head') {
      if (buf.buffer !== this.scratch.buffer || buf.byteOffset !== this.scratch.byteOffset + this.headUsed) {
        // Read into the connection's idle buffer (the read asked for before this exchange).
        if (this.headUsed + n > this.scratch.length) {
          this.fail(new Http1Error(`response head larger than ${this.scratch.length} bytes`));
          return false;
        }
        this.scratch.set(buf.subarray(0, n), this.headUsed);
      }
      this.headUsed += n;
      this.parseHead();
      return this.current() === 'head';
    }
    let kept: number;
    try {
      kept = this.frame(buf, n);
    } catch (err) {
      this.fail(err as Error);
      return false;
    }
    if (kept > 0) {
      // Read straight into the sink's space (de-chunked in place), or into the
      // scratch buffer when no sink space was set for this read.
      if (buf !== this.scratch && this.sink) this.sink.filled(kept);
      else this.deliver(Buffer.from(buf.buffer, buf.byteOffset, kept));
    }
    if (this.framingDone()) this.finish();
    return this.current() !== 'done';
  }

  /** Applies the body's framing to `buf[0, n)` in place; returns how many body bytes it holds. */
  private frame(buf: Uint8Array, n: number): number {
    const f = this.framing;
    switch (f.kind) {
      case 'length': {
        const kept = Math.min(n, f.remaining);
        f.remaining -= kept;
        if (kept < n) this.surplus = true;
        return kept;
      }
      case 'chunked': {
        const kept = f.decoder.decode(buf, n);
        if (f.decoder.consumed < n) this.surplus = true;
        return kept;
      }
      case 'close':
        return n;
      case 'none':
        return 0;
    }
  }

  private framingDone(): boolean {
    const f = this.framing;
    return (
      (f.kind === 'length' && f.remaining === 0) ||
      (f.kind === 'chunked' && f.decoder.done) ||
      f.kind === 'none'
    );
  }

  /** Copies body bytes to the sink, or keeps them until it starts. */
  private deliver(bytes: Buffer): void {
    if (!this.sink) {
      this.early.push(Buffer.from(bytes));
      return;
    }
    for (let off = 0; off < bytes.length;) {
      const space = this.sink.space();
      const k = Math.min(space.length, bytes.length - off);
      space.set(bytes.subarray(off, off + k));
      off += k;
      this.sink.filled(k);
    }
  }

  private parseHead(): void {
    for (;;) {
      const end = this.scratch.subarray(0, this.headUsed).indexOf('\r\n\r\n');
      if (end === -1) {
        if (this.headUsed >= this.scratch.length) {
          this.fail(new Http1Error(`response head larger than ${this.scratch.length} bytes`));
        }
        return;
      }
      const text = this.scratch.toString('latin1', 0, end);
      const rest = Buffer.from(this.scratch.subarray(end + 4, this.headUsed));
      let parsed: { statusCode: number; headers: Http1Response['headers'] };
      try {
        parsed = parseHead(text);
      } catch (err) {
        this.fail(err as Error);
        return;
      }
      if (parsed.statusCode >= 100 && parsed.statusCode < 200) {
        // An interim answer (100 Continue, 103 Early Hints): the real one follows.
        rest.copy(this.scratch);
        this.headUsed = rest.length;
        continue;
      }
      this.headUsed = 0;
      try {
        this.framing = framingOf(this.method, parsed.statusCode, parsed.headers);
      } catch (err) {
        this.fail(err as Error);
        return;
      }
      if (this.framing.kind === 'length') this.length = this.framing.remaining;
      this.keepAliveMs = keepAliveMs(text, parsed.headers, this.framing);
      this.phase = 'waiting';
      this.socket.pause();
      if (rest.length > 0) {
        try {
          const kept = this.frame(rest, rest.length);
          if (kept > 0) this.early.push(rest.subarray(0, kept));
        } catch (err) {
          this.fail(err as Error);
          return;
        }
      }
      if (this.framingDone()) this.phase = 'done';
      this.settled = true;
      this.resolveHead({ statusCode: parsed.statusCode, headers: parsed.headers, body: this });
      if (this.phase === 'done') this.release();
      return;
    }
  }

  start(sink: DirectSink): void {
    if (this.sink) throw new Http1Error('the body is read already');
    this.sink = sink;
    const early = this.early;
    this.early = [];
    for (const bytes of early) this.deliver(bytes);
    if (this.failure) {
      sink.error(this.failure);
      return;
    }
    if (this.phase === 'done') {
      sink.end();
      return;
    }
    this.phase = 'body';
    this.socket.resume();
  }

  pause(): void {
    if (this.phase === 'body') this.socket.pause();
  }

  resume(): void {
    if (this.phase === 'body') this.socket.resume();
  }

  destroy(err?: Error): void {
    if (this.phase === 'done') return;
    if (err) this.fail(err);
    else {
      // Unread bytes would be the next request's answer: the connection goes.
      this.phase = 'done';
      this.detach();
      this.conn.drop();
    }
  }

  text(limit = 64 * 1024): Promise<string> {
    return new Promise((resolve) => {
      const chunks: Buffer[] = [];
      let size = 0;
      let space = Buffer.allocUnsafe(16 * 1024);
      const done = () => resolve(Buffer.concat(chunks).toString('utf8'));
      this.start({
        space: () => space,
        filled: (n) => {
          if (size < limit) chunks.push(Buffer.from(space.subarray(0, Math.min(n, limit - size))));
          size += n;
          space = Buffer.allocUnsafe(16 * 1024);
          if (size >= limit) {
            done();
            this.destroy();
          }
        },
        end: done,
        // What arrived is what there is to tell.
        error: done,
      });
    });
  }

  /** The server ended the connection. */
  onEnd(): void {
    if (this.phase === 'done') return;
    if (this.phase === 'head') {
      this.fail(new Http1Error('connection closed before a response'));
      return;
    }
    const f = this.framing;
    if (f.kind === 'close') {
      this.finish();
      return;
    }
    const what =
      f.kind === 'length' ? `${f.remaining} bytes short of its Content-Length` : 'inside a chunked body';
    this.fail(new Http1Error(`connection closed ${what}`));
  }

  private finish(): void {
    if (this.phase === 'done') return;
    const wasWaiting = this.phase === 'waiting';
    this.phase = 'done';
    this.release();
    // Not started yet: `start` ends the sink.
    if (!wasWaiting) this.sink?.end();
  }

  /** Fails the exchange (once); the connection goes with it. */
  fail(err: Error): void {
    if (this.phase === 'done' && this.settled) return;
    const sink = this.sink;
    const started = this.phase === 'body';
    this.failure ??= err;
    this.phase = 'done';
    this.detach();
    this.conn.drop();
    if (!this.settled) {
      this.settled = true;
      const stale = this.conn.reused && !this.answered && !this.options.signal?.aborted;
      this.rejectHead(stale ? new StaleConnectionError(err.message, { cause: err }) : err);
      return;
    }
    if (started) sink?.error(err);
  }

  /** The answer is read whole: the connection serves the next request, or closes. */
  private release(): void {
    this.detach();
    if (this.keepAliveMs > 0 && !this.surplus) this.conn.park(this.keepAliveMs);
    else this.conn.drop();
  }

  private detach(): void {
    if (this.onAbort) this.options.signal?.removeEventListener('abort', this.onAbort);
    this.onAbort = undefined;
  }
}

/**
 * How long the connection may wait for another request once this answer is
 * read, or 0: only HTTP/1.1 answers framed by length or chunks, without
 * `Connection: close`, within the server's own `Keep-Alive: timeout` less a second.
 */
function keepAliveMs(head: string, headers: Http1Response['headers'], framing: Framing): number {
  if (framing.kind === 'close' || !head.startsWith('HTTP/1.1 ')) return 0;
  const tokens = [headers.connection ?? []].flat().join(',').toLowerCase().split(',');
  if (tokens.some((t) => t.trim() === 'close')) return 0;
  const timeout = /(?:^|[,\s])timeout=(\d+)/i.exec([headers['keep-alive'] ?? []].flat().join(','));
  if (timeout) return Math.min(IDLE_MS, Number(timeout[1]) * 1000 - 1000);
  return IDLE_MS;
}

function abortReason(signal: AbortSignal): Error {
  const reason: unknown = signal.reason;
  return reason instanceof Error ? reason : new Http1Error('request aborted');
}

/** Status line and header fields of a response head (without its blank line). */
export function parseHead(text: string): { statusCode: number; headers: Http1Response['headers'] } {
  const lines = text.split('\r\n');
  const status = /^HTTP\/1\.[01] (\d{3})(?: .*)?$/.exec(lines[0]);
  if (!status) throw new Http1Error(`not an HTTP/1.1 status line: ${JSON.stringify(lines[0].slice(0, 80))}`);
  const headers: Http1Response['headers'] = {};
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(':');
    if (colon <= 0 || /^[ \t]/.test(line)) {
      throw new Http1Error(`malformed response header line ${JSON.stringify(line.slice(0, 80))}`);
    }
    const name = line.slice(0, colon).trim().toLowerCase();
    const value = line.slice(colon + 1).trim();
    const had = headers[name];
    headers[name] = had === undefined ? value : Array.isArray(had) ? [...had, value] : [had, value];
  }
  return { statusCode: Number(status[1]), headers };
}

function framingOf(method: string, statusCode: number, headers: Http1Response['headers']): Framing {
  if (method === 'HEAD' || statusCode === 204 || statusCode === 304) return { kind: 'none' };
  const te = [headers['transfer-encoding'] ?? []].flat().join(',').toLowerCase();
  if (te !== '') {
    const codings = te.split(',').map((s) => s.trim());
    if (codings.at(-1) !== 'chunked' || codings.length > 1) {
      throw new Http1Error(`unsupported Transfer-Encoding ${JSON.stringify(te)}`);
    }
    return { kind: 'chunked', decoder: new ChunkedDecoder() };
  }
  const cl = headers['content-length'];
  if (cl !== undefined) {
    const values = [...new Set([cl].flat().flatMap((v) => v.split(',').map((s) => s.trim())))];
    if (values.length !== 1 || !/^\d{1,15}$/.test(values[0])) {
      throw new Http1Error(`invalid Content-Length ${JSON.stringify(cl)}`);
    }
    return { kind: 'length', remaining: Number(values[0]) };
  }
  return { kind: 'close' };
}

/**
 * The chunked transfer coding, undone in place: each call compacts the data
 * bytes of `buf[0, n)` to its front and says how many there are. State runs
 * across calls (a size line or CRLF may be cut anywhere).
 */
export class ChunkedDecoder {
  private state: 'size' | 'ext' | 'sizeLF' | 'data' | 'dataCR' | 'dataLF' | 'trailer' | 'trailerLF' | 'done' =
    'size';
  private size = 0;
  private sizeDigits = 0;
  private lineBytes = 0;
  /** The trailer line being read is empty so far (an empty one ends the body). */
  private trailerEmpty = true;

  /** Input bytes the last `decode` used (fewer than given once the body ended inside them). */
  consumed = 0;

  get done(): boolean {
    return this.state === 'done';
  }

  decode(buf: Uint8Array, n: number): number {
    let w = 0;
    let i = 0;
    while (i < n && this.state !== 'done') {
      if (this.state === 'data') {
        const k = Math.min(this.size, n - i);
        if (w !== i) buf.copyWithin(w, i, i + k);
        w += k;
        i += k;
        this.size -= k;
        if (this.size === 0) this.state = 'dataCR';
        continue;
      }
      const c = buf[i++];
      switch (this.state) {
        case 'size': {
          const digit = hexValue(c);
          if (digit >= 0) {
            if (++this.sizeDigits > 13) throw new Http1Error('chunk size too large');
            this.size = this.size * 16 + digit;
          } else if (c === CR && this.sizeDigits > 0) this.state = 'sizeLF';
          else if ((c === 0x3b || c === 0x20 || c === 0x09) && this.sizeDigits > 0) this.state = 'ext';
          else throw new Http1Error('malformed chunk size');
          break;
        }
        case 'ext':
          if (++this.lineBytes > MAX_CHUNK_LINE) throw new Http1Error('chunk extension too long');
          if (c === CR) this.state = 'sizeLF';
          else if (c === LF) throw new Http1Error('malformed chunk size line');
          break;
        case 'sizeLF':
          if (c !== LF) throw new Http1Error('malformed chunk size line');
          this.sizeDigits = 0;
          this.lineBytes = 0;
          if (this.size === 0) {
            this.state = 'trailer';
            this.trailerEmpty = true;
          } else this.state = 'data';
          break;
        case 'dataCR':
          if (c !== CR) throw new Http1Error('chunk data longer than its size');
          this.state = 'dataLF';
          break;
        case 'dataLF':
          if (c !== LF) throw new Http1Error('chunk data longer than its size');
          this.state = 'size';
          this.size = 0;
          break;
        case 'trailer':
          if (c === CR) this.state = 'trailerLF';
          else {
            this.trailerEmpty = false;
            if (++this.lineBytes > MAX_CHUNK_LINE) throw new Http1Error('chunk trailer too long');
          }
          break;
        case 'trailerLF':
          if (c !== LF) throw new Http1Error('malformed chunk trailer');
          if (this.trailerEmpty) this.state = 'done';
          else {
            this.state = 'trailer';
            this.trailerEmpty = true;
            this.lineBytes = 0;
          }
          break;
      }
    }
    this.consumed = i;
    return w;
  }
}

function hexValue(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x61 && c <= 0x66) return c - 0x61 + 10;
  if (c >= 0x41 && c <= 0x46) return c - 0x41 + 10;
  return -1;
}
