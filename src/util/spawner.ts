/**
 * Starts programs through native/berth-spawn, a small long-lived helper,
 * instead of Node's child_process: Node forks the whole daemon and holds the
 * event loop until the exec (5-15 ms a process here), the helper spawns with
 * vfork semantics and berth only writes a request and reads a reply.
 *
 * Output is either captured by the helper and returned at the end (run()),
 * or given as streams: the child's fd is a unix socket connected to berth
 * (conmon's sync and start pipes, an exec's stdio).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createServer, type Server, type Socket } from 'node:net';
import { constants as osConstants } from 'node:os';
import type { Readable } from 'node:stream';

export interface SpawnRequest {
  file: string;
  args: readonly string[];
  env: NodeJS.ProcessEnv;
  cwd?: string | undefined;
  input?: string | Uint8Array | undefined;
  /** Killed with SIGKILL after this long; 0 or absent: never. */
  timeoutMs?: number | undefined;
  /** Cap on captured bytes per stream; the rest is discarded. */
  maxOutputBytes?: number | undefined;
  /** Child fds (0-63) that become sockets connected to berth instead of captured pipes. */
  streams?: readonly number[] | undefined;
  /** stdin, stdout and stderr not given as streams are /dev/null instead of captured. */
  discardStdio?: boolean | undefined;
  /** Runs in a session of its own (a signal to berth's process group does not reach it). */
  newSession?: boolean | undefined;
}

/** How a process ended, from its wait status. */
export interface ProcessEnd {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** Told of every adopted process that ends (the helper is a child subreaper). */
export type AdoptedExitListener = (pid: number, end: ProcessEnd) => void;

export interface SpawnOutcome {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: Buffer;
  stderr: Buffer;
  timedOut: boolean;
}

/** A program started with start(). */
export interface SpawnedProcess {
  /** The pid once the program runs and its streams are connected; rejects when it could not start. */
  readonly started: Promise<number>;
  /** Its streams by child fd, complete once `started` resolves. */
  readonly streams: ReadonlyMap<number, Socket>;
  /** How it ended (captured output included). */
  readonly done: Promise<SpawnOutcome>;
  /** True once it has ended and been reaped. */
  readonly ended: boolean;
  /** Sends a signal while it runs (never to a recycled pid: the helper reaps it). */
  kill(signal: NodeJS.Signals): void;
}

interface Pending {
  request: SpawnRequest;
  onStarted: (pid: number) => void;
  resolve: (outcome: SpawnOutcome) => void;
  reject: (err: Error) => void;
}

const TOKEN_BYTES = 16;
const SPAWN_HEADER_BYTES = 9 * 4;
const REPLY_HEADER_BYTES = 7 * 4;
const OP_SPAWN = 0;
const OP_SIGNAL = 1;
const FLAG_CWD = 1;
const FLAG_SETSID = 2;
const FLAG_REPORT_START = 4;
const FLAG_DISCARD = 8;
const KIND_EXITED = 0;
const KIND_SIGNALED = 1;
const KIND_NOT_STARTED = 2;
const KIND_STARTED = 3;
/** A process the helper did not start (its programs left it behind) ended: id 0, value its pid. */
const KIND_ADOPTED = 4;
/** Captured bytes per output stream when a request names no cap (both backends). */
export const DEFAULT_MAX_OUTPUT = 16 * 1024 * 1024;
/** A connection that has not named its stream by then is not the helper's. */
const TOKEN_WAIT_MS = 10_000;

const errnoNames = new Map<number, string>(
  Object.entries(osConstants.errno).map(([name, num]) => [num, name]),
);
const signalNames = new Map<number, NodeJS.Signals>(
  Object.entries(osConstants.signals).map(([name, num]) => [num, name as NodeJS.Signals]),
);

/** A shell's view of how a process ended: its code, 128 + the signal that killed it, -1 if unknown. */
export function exitCodeOf(end: ProcessEnd): number {
  if (end.code !== null) return end.code;
  return end.signal ? 128 + (osConstants.signals[end.signal] ?? 0) : -1;
}

/** Decodes a raw wait status (exited: code in bits 8-15; signaled: signal in bits 0-6). */
export function decodeWaitStatus(status: number): ProcessEnd {
  const signo = status & 0x7f;
  if (signo === 0) return { code: (status >> 8) & 0xff, signal: null };
  return { code: null, signal: signalNames.get(signo) ?? null };
}

/** The error Node's spawn gives for a program that could not start (code ENOENT, EACCES, ...). */
function spawnError(request: SpawnRequest, errno: number): NodeJS.ErrnoException {
  const code = errnoNames.get(errno) ?? `errno ${errno}`;
  const err: NodeJS.ErrnoException = new Error(`spawn ${request.file} ${code}`);
  err.code = code;
  err.errno = -errno;
  err.syscall = `spawn ${request.file}`;
  err.path = request.file;
  return err;
}

function encodeSpawn(id: number, request: SpawnRequest, tokens: readonly Buffer[]): Buffer {
  const strings: string[] = [request.file, request.file, ...request.args];
  let envc = 0;
  for (const [key, value] of Object.entries(request.env)) {
    if (value === undefined) continue;
    strings.push(`${key}=${value}`);
    envc++;
  }
  if (request.cwd !== undefined) strings.push(request.cwd);
  for (const s of strings) {
    if (s.includes('\0')) throw new TypeError(`argument for ${request.file} contains a NUL byte`);
  }
  const streams = request.streams ?? [];
  for (const fd of streams) {
    if (!Number.isInteger(fd) || fd < 0 || fd > 63) throw new RangeError(`stream fd ${fd} is not 0-63`);
  }
  const encoded = Buffer.from(strings.join('\0') + '\0', 'utf8');
  const input =
    request.input === undefined
      ? Buffer.alloc(0)
      : typeof request.input === 'string'
        ? Buffer.from(request.input, 'utf8')
        : Buffer.from(request.input.buffer, request.input.byteOffset, request.input.byteLength);
  const streamBytes = streams.length * (4 + TOKEN_BYTES);
  const frame = Buffer.allocUnsafe(SPAWN_HEADER_BYTES + encoded.length + streamBytes + input.length);
  let flags = FLAG_REPORT_START;
  if (request.cwd !== undefined) flags |= FLAG_CWD;
  if (request.newSession) flags |= FLAG_SETSID;
  if (request.discardStdio) flags |= FLAG_DISCARD;
  const header = [
    frame.length - 4,
    OP_SPAWN,
    id,
    Math.max(0, Math.min(Math.ceil(request.timeoutMs ?? 0), 0xffffffff)),
    Math.min(request.maxOutputBytes ?? DEFAULT_MAX_OUTPUT, 0xffffffff),
    1 + request.args.length,
    envc,
    flags,
    streams.length,
  ];
  header.forEach((word, i) => frame.writeUInt32LE(word, i * 4));
  let offset = SPAWN_HEADER_BYTES + encoded.copy(frame, SPAWN_HEADER_BYTES);
  streams.forEach((fd, i) => {
    frame.writeUInt32LE(fd, offset);
    tokens[i]!.copy(frame, offset + 4);
    offset += 4 + TOKEN_BYTES;
  });
  input.copy(frame, offset);
  return frame;
}

export class Spawner {
  private helper: ChildProcess | undefined;
  private server: Server | undefined;
  private socketName = '';
  private readonly pending = new Map<number, Pending>();
  /** Streams announced by the helper, by token (hex), until their request claims them. */
  private readonly waiting = new Map<string, (socket: Socket) => void>();
  private nextId = 1;
  private received: Buffer[] = [];
  private receivedBytes = 0;
  private readonly adoptedListeners: AdoptedExitListener[] = [];

  constructor(private readonly helperPath: string) {}

  /** Calls listener for each adopted process that ends (see native/berth-spawn.c). */
  onAdoptedExit(listener: AdoptedExitListener): void {
    this.adoptedListeners.push(listener);
  }

  start(request: SpawnRequest): SpawnedProcess {
    const id = this.nextId;
    this.nextId = this.nextId >= 0xffffffff ? 1 : this.nextId + 1;
    const streams = new Map<number, Socket>();
    let pidSeen!: (pid: number) => void;
    const pid = new Promise<number>((resolve) => (pidSeen = resolve));
    const state = { ended: false };
    const tokens = (request.streams ?? []).map(() => randomBytes(TOKEN_BYTES));
    const connected = (request.streams ?? []).map(
      (fd, i) =>
        new Promise<void>((resolve) =>
          this.waiting.set(tokens[i]!.toString('hex'), (socket) => {
            streams.set(fd, socket);
            resolve();
          }),
        ),
    );
    const forget = (): void => {
      for (const token of tokens) this.waiting.delete(token.toString('hex'));
    };
    let failStart!: (err: Error) => void;
    const startFailed = new Promise<never>((_, reject) => (failStart = reject));
    const done = new Promise<SpawnOutcome>((resolve, reject) => {
      let frame: Buffer;
      try {
        frame = encodeSpawn(id, request, tokens);
      } catch (err) {
        forget();
        reject(err as Error);
        return;
      }
      const helper = this.ensureHelper();
      this.pending.set(id, {
        request,
        onStarted: pidSeen,
        resolve: (outcome) => {
          state.ended = true;
          forget();
          resolve(outcome);
        },
        reject: (err) => {
          state.ended = true;
          forget();
          for (const socket of streams.values()) socket.destroy();
          reject(err);
        },
      });
      if (this.pending.size === 1) this.setRef(true);
      helper.stdin!.write(frame);
    });
    done.catch((err: Error) => failStart(err));
    const started = Promise.race([Promise.all([pid, ...connected]).then(([p]) => p), startFailed]);
    started.catch(() => undefined);
    return {
      started,
      streams,
      done,
      get ended() {
        return state.ended;
      },
      kill: (signal: NodeJS.Signals) => {
        if (state.ended) return;
        const frame = Buffer.allocUnsafe(4 * 4);
        [3 * 4, OP_SIGNAL, id, osConstants.signals[signal]].forEach((word, i) =>
          frame.writeUInt32LE(word, i * 4),
        );
        this.helper?.stdin?.write(frame);
      },
    };
  }

  /** Starts the helper if it is not running (it then waits, holding nothing alive). */
  prestart(): void {
    this.ensureHelper();
  }

  /** Ends the helper once its running programs have ended (tests, shutdown). */
  close(): void {
    this.helper?.stdin?.end();
    this.server?.close();
    this.server = undefined;
  }

  private ensureServer(): void {
    if (this.server) return;
    this.socketName = `berth-spawn-${process.pid}-${randomBytes(8).toString('hex')}`;
    const server = createServer((socket) => this.accept(socket));
    server.on('error', () => undefined); // a failed listen shows as streams that never connect
    // Abstract (no file to clean up); a stranger that connects cannot guess a token.
    server.listen(`\0${this.socketName}`);
    server.unref();
    this.server = server;
  }

  private accept(socket: Socket): void {
    const timer = setTimeout(() => socket.destroy(), TOKEN_WAIT_MS);
    timer.unref();
    socket.on('error', () => undefined);
    // Paused-mode read of the token: what follows stays buffered for whoever takes the socket.
    const onReadable = (): void => {
      const token = socket.read(TOKEN_BYTES) as Buffer | null;
      if (token === null) return;
      socket.off('readable', onReadable);
      clearTimeout(timer);
      const claim = this.waiting.get(token.toString('hex'));
      if (!claim) {
        socket.destroy();
        return;
      }
      this.waiting.delete(token.toString('hex'));
      claim(socket);
    };
    socket.on('readable', onReadable);
  }

  private ensureHelper(): ChildProcess {
    if (this.helper) return this.helper;
    this.ensureServer();
    const helper = spawn(this.helperPath, [this.socketName], { stdio: ['pipe', 'pipe', 'pipe'] });
    this.helper = helper;
    const stderr: Buffer[] = [];
    (helper.stdout as Readable).on('data', (chunk: Buffer) => this.receive(chunk));
    (helper.stderr as Readable).on('data', (chunk: Buffer) => {
      if (stderr.length < 16) stderr.push(chunk);
    });
    helper.stdin!.on('error', () => undefined); // the exit handler reports it
    const lost = (why: string): void => {
      if (this.helper !== helper) return;
      this.helper = undefined;
      this.received = [];
      this.receivedBytes = 0;
      const detail = Buffer.concat(stderr).toString('utf8').trim();
      for (const [id, p] of this.pending) {
        this.pending.delete(id);
        p.reject(
          new Error(`${p.request.file}: outcome unknown, berth-spawn ${why}${detail ? `: ${detail}` : ''}`),
        );
      }
    };
    helper.on('error', (err) => lost(`could not start (${err.message})`));
    helper.on('exit', (code, signal) => lost(signal ? `was killed by ${signal}` : `exited with ${code}`));
    helper.unref();
    this.setRef(this.pending.size > 0);
    return helper;
  }

  /** The helper keeps the process alive only while a program runs. */
  private setRef(ref: boolean): void {
    const helper = this.helper;
    if (!helper) return;
    for (const stream of [helper.stdin, helper.stdout, helper.stderr] as unknown as {
      ref?: () => void;
      unref?: () => void;
    }[]) {
      if (ref) stream.ref?.();
      else stream.unref?.();
    }
  }

  private receive(chunk: Buffer): void {
    this.received.push(chunk);
    this.receivedBytes += chunk.length;
    if (this.receivedBytes < 4) return;
    // Joined only once a whole reply is here: a large output arrives in many reads.
    const head = this.received[0]!.length >= 4 ? this.received[0]! : Buffer.concat(this.received);
    if (this.receivedBytes < 4 + head.readUInt32LE(0)) return;
    let data = this.received.length === 1 ? this.received[0]! : Buffer.concat(this.received);
    let offset = 0;
    while (data.length - offset >= 4) {
      const len = data.readUInt32LE(offset);
      if (data.length - offset - 4 < len) break;
      this.settle(data.subarray(offset, offset + 4 + len));
      offset += 4 + len;
    }
    data = data.subarray(offset);
    this.received = data.length ? [data] : [];
    this.receivedBytes = data.length;
  }

  private settle(frame: Buffer): void {
    const id = frame.readUInt32LE(4);
    const kind = frame.readUInt32LE(8);
    const value = frame.readUInt32LE(12);
    const timedOut = frame.readUInt32LE(16) !== 0;
    const outLen = frame.readUInt32LE(20);
    const errLen = frame.readUInt32LE(24);
    if (kind === KIND_ADOPTED) {
      const end = decodeWaitStatus(frame.readUInt32LE(16));
      for (const listener of this.adoptedListeners) listener(value, end);
      return;
    }
    const p = this.pending.get(id);
    if (!p) return;
    if (kind === KIND_STARTED) {
      p.onStarted(value);
      return;
    }
    this.pending.delete(id);
    if (this.pending.size === 0) this.setRef(false);
    if (kind === KIND_NOT_STARTED) {
      p.reject(spawnError(p.request, value));
      return;
    }
    // Copies: the reply may be a slice of a large read that should not stay alive.
    const stdout = Buffer.from(frame.subarray(REPLY_HEADER_BYTES, REPLY_HEADER_BYTES + outLen));
    const stderr = Buffer.from(
      frame.subarray(REPLY_HEADER_BYTES + outLen, REPLY_HEADER_BYTES + outLen + errLen),
    );
    p.resolve({
      code: kind === KIND_EXITED ? value : null,
      signal: kind === KIND_SIGNALED ? (signalNames.get(value) ?? null) : null,
      stdout,
      stderr,
      timedOut,
    });
  }
}
