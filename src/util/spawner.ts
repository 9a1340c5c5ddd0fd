/**
 * Starts short-lived programs through native/berth-spawn, a small long-lived
 * helper, instead of Node's child_process: Node forks the whole daemon and
 * holds the event loop until the exec (5-15 ms a process here), the helper
 * spawns with vfork semantics and berth only writes a request and reads a
 * reply. Output is captured, not streamed: for programs that run and end.
 */
import { spawn, type ChildProcess } from 'node:child_process';
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
  maxOutputBytes: number;
}

export interface SpawnOutcome {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: Buffer;
  stderr: Buffer;
  timedOut: boolean;
}

interface Pending {
  request: SpawnRequest;
  resolve: (outcome: SpawnOutcome) => void;
  reject: (err: Error) => void;
}

const REQUEST_HEADER_BYTES = 7 * 4;
const REPLY_HEADER_BYTES = 7 * 4;
const KIND_EXITED = 0;
const KIND_SIGNALED = 1;
const KIND_NOT_STARTED = 2;

const errnoNames = new Map<number, string>(
  Object.entries(osConstants.errno).map(([name, num]) => [num, name]),
);
const signalNames = new Map<number, NodeJS.Signals>(
  Object.entries(osConstants.signals).map(([name, num]) => [num, name as NodeJS.Signals]),
);

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

function encodeRequest(id: number, request: SpawnRequest): Buffer {
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
  const encoded = Buffer.from(strings.join('\0') + '\0', 'utf8');
  const input =
    request.input === undefined
      ? Buffer.alloc(0)
      : typeof request.input === 'string'
        ? Buffer.from(request.input, 'utf8')
        : Buffer.from(request.input.buffer, request.input.byteOffset, request.input.byteLength);
  const frame = Buffer.allocUnsafe(REQUEST_HEADER_BYTES + encoded.length + input.length);
  frame.writeUInt32LE(REQUEST_HEADER_BYTES - 4 + encoded.length + input.length, 0);
  frame.writeUInt32LE(id, 4);
  frame.writeUInt32LE(Math.max(0, Math.min(Math.ceil(request.timeoutMs ?? 0), 0xffffffff)), 8);
  frame.writeUInt32LE(Math.min(request.maxOutputBytes, 0xffffffff), 12);
  frame.writeUInt32LE(1 + request.args.length, 16);
  frame.writeUInt32LE(envc, 20);
  frame.writeUInt32LE(request.cwd !== undefined ? 1 : 0, 24);
  encoded.copy(frame, REQUEST_HEADER_BYTES);
  input.copy(frame, REQUEST_HEADER_BYTES + encoded.length);
  return frame;
}

export class Spawner {
  private helper: ChildProcess | undefined;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private received: Buffer[] = [];
  private receivedBytes = 0;

  constructor(private readonly helperPath: string) {}

  run(request: SpawnRequest): Promise<SpawnOutcome> {
    return new Promise((resolve, reject) => {
      const id = this.nextId;
      this.nextId = this.nextId >= 0xffffffff ? 1 : this.nextId + 1;
      let frame: Buffer;
      try {
        frame = encodeRequest(id, request);
      } catch (err) {
        reject(err as Error);
        return;
      }
      const helper = this.ensureHelper();
      this.pending.set(id, { request, resolve, reject });
      if (this.pending.size === 1) this.setRef(true);
      helper.stdin!.write(frame);
    });
  }

  /** Ends the helper once its running programs have ended (tests, shutdown). */
  close(): void {
    this.helper?.stdin?.end();
  }

  private ensureHelper(): ChildProcess {
    if (this.helper) return this.helper;
    const helper = spawn(this.helperPath, [], { stdio: ['pipe', 'pipe', 'pipe'] });
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
    const p = this.pending.get(id);
    if (!p) return;
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
