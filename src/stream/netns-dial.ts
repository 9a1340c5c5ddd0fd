/**
 * TCP connections to 127.0.0.1:PORT inside a pod's network namespace. Node
 * cannot setns, so for each namespace berth keeps a small Node helper running
 * inside it (`nsenter --net=NS node netns-dialer.js`, an IPC channel to
 * berth). Asked for a port, the helper connects from inside the namespace and
 * hands the connected socket back over IPC (SCM_RIGHTS); the socket stays in
 * the namespace it was made in, so berth then reads and writes it directly
 * with no relay process on the data path. A helper exits after a minute
 * without requests, or within seconds of its namespace being removed.
 *
 * berth reads each such socket into one buffer of its own, reused for every
 * read (Node's `onread`), rather than a fresh 64 KiB buffer per read: a
 * relay can hand the bytes on without the allocations and the garbage of a
 * bulk transfer (see NetnsConnection.consume).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { Socket, type SocketConstructorOpts } from 'node:net';
import { fileURLToPath } from 'node:url';
import type { Readable, Writable } from 'node:stream';
import { isNetns } from '../sandbox/network/netns.js';

export const NSENTER_PATH = '/usr/bin/nsenter';
/** How long the client's direction may go on after the port's side has closed. */
export const HALF_CLOSE_GRACE_MS = 1000;
const HELPER_IDLE_MS = 60_000;
const SEND_FAILURE_GRACE_MS = 5_000;
/** How often a helper's namespace is checked for removal (its pod is gone). */
const NETNS_CHECK_MS = 2_000;
const HELPER = fileURLToPath(new URL('./netns-dialer.js', import.meta.url));
/** Each connection's read buffer: one read's most. */
export const READ_BUFFER_BYTES = 256 * 1024;

export interface NetnsConnection {
  /** Bytes to the port. */
  input: Writable;
  /** Bytes from the port; ends when the port's side closes. */
  output: Readable;
  /**
   * From now on hands each read from the port to `consumer` instead of
   * `output`'s 'data' (what `output` already holds goes first). The bytes lie
   * in the connection's own read buffer: they are the consumer's until it
   * returns true, or, when it returns false, until it calls `resume()`;
   * reading waits meanwhile. `output` still ends as before.
   */
  consume(consumer: (bytes: Buffer) => boolean): void;
  /** Reads again after the consumer returned false. */
  resume(): void;
  /** Resolves with null once the connection closes cleanly, else with the reason it failed. */
  done: Promise<string | null>;
  /**
   * Like `done`, but once the port's side has closed waits at most graceMs
   * for the rest before closing: clients such as kubectl treat the remote
   * close as the end of the connection (CRI-O gives the same grace).
   */
  settled(graceMs: number): Promise<string | null>;
  kill(): void;
}

interface DialReply {
  id: number;
  error?: string;
}

/** A connected TCP handle as Node passes it over IPC (the wrap a net.Socket is built around). */
type StreamHandle = NonNullable<SocketConstructorOpts['handle']>;

function isStreamHandle(handle: unknown): handle is StreamHandle {
  return (
    typeof handle === 'object' &&
    handle !== null &&
    typeof (handle as { readStart?: unknown }).readStart === 'function'
  );
}

/** A socket around a handle from the dialer, reading into one buffer of its own. */
class PortSocket {
  readonly socket: Socket;
  private consumer?: (bytes: Buffer) => boolean;

  constructor(handle: StreamHandle) {
    const buffer = Buffer.allocUnsafe(READ_BUFFER_BYTES);
    this.socket = new Socket({
      handle,
      readable: true,
      writable: true,
      onread: { buffer, callback: (n) => this.onRead(buffer.subarray(0, n)) },
    });
  }

  consume(consumer: (bytes: Buffer) => boolean): void {
    let waiting = false;
    for (
      let early = this.socket.read() as Buffer | null;
      early !== null;
      early = this.socket.read() as Buffer | null
    ) {
      if (!consumer(early)) waiting = true;
    }
    this.consumer = consumer;
    // Flowing (so that the end, pushed as usual, is emitted) unless the
    // consumer asked to wait: then its resume() starts the flow.
    if (waiting) this.socket.pause();
    else this.socket.resume();
  }

  private onRead(bytes: Buffer): boolean {
    if (this.consumer) return this.consumer(bytes);
    // No consumer: `output` readers get copies, the buffer being reused.
    return this.socket.push(Buffer.from(bytes));
  }
}

class NetnsDialer {
  private child?: ChildProcess;
  private next = 0;
  private readonly waiting = new Map<
    number,
    { resolve: (s: PortSocket) => void; reject: (e: Error) => void }
  >();
  private idle?: NodeJS.Timeout;
  private gone?: NodeJS.Timeout;
  private exitReason = '';

  constructor(
    private readonly netnsPath: string,
    private readonly onGone: () => void,
  ) {}

  dial(port: number): Promise<PortSocket> {
    const child = this.ensureChild();
    if (this.idle) clearTimeout(this.idle);
    this.idle = setTimeout(() => this.stop(), HELPER_IDLE_MS);
    this.idle.unref();
    // The helper holds the namespace: once the pod's netns file is gone, let go of it too.
    this.gone ??= setInterval(() => {
      void isNetns(this.netnsPath).then(
        (present) => {
          if (!present) this.stop();
        },
        () => undefined,
      );
    }, NETNS_CHECK_MS);
    this.gone.unref();
    const id = this.next++;
    return new Promise((resolve, reject) => {
      this.waiting.set(id, { resolve, reject });
      child.send({ id, port }, (err) => {
        if (!err) return;
        // Usually the helper died at start (nsenter found no namespace): its
        // 'close' settles this dial with the reason from its stderr. Only a
        // helper that lives on after a failed send gets the send error.
        const fallback = setTimeout(
          () => this.settle(id, new Error(`cannot reach the dialer in ${this.netnsPath}: ${err.message}`)),
          SEND_FAILURE_GRACE_MS,
        );
        fallback.unref();
      });
    });
  }

  stop(): void {
    this.child?.kill('SIGKILL');
  }

  private settle(id: number, result: PortSocket | Error): void {
    const waiter = this.waiting.get(id);
    this.waiting.delete(id);
    if (!waiter) {
      if (!(result instanceof Error)) result.socket.destroy();
      return;
    }
    if (result instanceof Error) waiter.reject(result);
    else waiter.resolve(result);
  }

  private ensureChild(): ChildProcess {
    if (this.child) return this.child;
    const child = spawn(NSENTER_PATH, [`--net=${this.netnsPath}`, '--', process.execPath, HELPER], {
      stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
    });
    this.child = child;
    let diagnostics = '';
    child.stderr!.on('data', (chunk: Buffer) => {
      if (diagnostics.length < 4096) diagnostics += chunk.toString();
    });
    child.on('message', (message: DialReply, handle?: unknown) => {
      if (message.error !== undefined || !isStreamHandle(handle))
        this.settle(
          message.id,
          new Error(message.error ?? `the dialer in ${this.netnsPath} answered without a connected socket`),
        );
      else this.settle(message.id, new PortSocket(handle));
    });
    const gone = (why: string) => {
      if (this.child !== child) return;
      this.child = undefined;
      this.exitReason = diagnostics.trim().split('\n')[0] || why;
      for (const id of [...this.waiting.keys()]) {
        this.settle(id, new Error(`cannot connect in ${this.netnsPath}: ${this.exitReason}`));
      }
      if (this.idle) clearTimeout(this.idle);
      if (this.gone) clearInterval(this.gone);
      this.gone = undefined;
      this.onGone();
    };
    child.once('error', (err) => gone(err.message));
    // 'close', not 'exit': by then stderr is read to the end, so nsenter's
    // reason (e.g. the namespace file is gone) makes it into the error.
    child.once('close', (code, signal) =>
      gone(signal ? `dialer killed by ${signal}` : `dialer exited with ${code}`),
    );
    return child;
  }
}

const dialers = new Map<string, NetnsDialer>();

/** Connects to 127.0.0.1:port inside the namespace; rejects with the reason (e.g. connection refused). */
export async function dialInNetns(netnsPath: string, port: number): Promise<NetnsConnection> {
  let dialer = dialers.get(netnsPath);
  if (!dialer) {
    const created = new NetnsDialer(netnsPath, () => {
      if (dialers.get(netnsPath) === created) dialers.delete(netnsPath);
    });
    dialers.set(netnsPath, created);
    dialer = created;
  }
  const dialled = await dialer.dial(port);
  const socket = dialled.socket;
  socket.setNoDelay(true);
  let failure: string | null = null;
  socket.on('error', (err) => {
    failure ??= err.message;
  });
  const done = new Promise<string | null>((resolve) => socket.once('close', () => resolve(failure)));
  const ended = new Promise<void>((resolve) => socket.once('end', () => resolve()));
  return {
    input: socket,
    output: socket,
    consume: (consumer) => dialled.consume(consumer),
    resume: () => socket.resume(),
    done,
    async settled(graceMs: number) {
      const first = await Promise.race([done, ended.then(() => 'ended' as const)]);
      if (first !== 'ended') return first;
      let timer: NodeJS.Timeout | undefined;
      const graced = await Promise.race([
        done,
        new Promise<'grace'>((resolve) => (timer = setTimeout(() => resolve('grace'), graceMs))),
      ]);
      clearTimeout(timer);
      if (graced !== 'grace') return graced;
      socket.destroy();
      return null;
    },
    kill() {
      socket.destroy();
    },
  };
}

/** Stops every dialer helper (daemon shutdown, tests). */
export function stopNetnsDialers(): void {
  for (const dialer of dialers.values()) dialer.stop();
  dialers.clear();
}
