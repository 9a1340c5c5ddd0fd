/**
 * A layer worker thread (see ingest.ts): runs ingestion jobs whose bytes
 * arrive as messages (or come from a file), verifying and storing the blob
 * and unpacking the layer with synchronous file I/O, which blocks only this
 * thread.
 */
import { closeSync, createReadStream, fsync, openSync, unlinkSync, writeSync } from 'node:fs';
import { promisify } from 'node:util';
import { setPriority } from 'node:os';
import { Readable } from 'node:stream';
import { parentPort } from 'node:worker_threads';
import { LayerFault, errnoCode, errorMessage } from './faults.js';
import type { FromWorker, IngestResult, IngestSpec, ToWorker, WireError } from './ingest.js';
import { unpackInThisThread } from './writer.js';
import { gcPacer } from '../../util/gc-pacer.js';

const port = parentPort!;

/**
 * Below the daemon's main thread: on Linux the nice value is per thread, so
 * layer work yields the CPU to gRPC calls (kubelet's probes of the runtime
 * must not time out behind a big pull) and takes all that is left.
 */
const NICE = 10;
try {
  setPriority(0, NICE);
} catch {
  // Not allowed (a lowered RLIMIT_NICE does not stop raising it; seccomp might): run as is.
}
const post = (m: FromWorker) => port.postMessage(m);
/** In the thread pool: a blocking fsync here would stall every other layer this thread handles. */
const fsyncAsync = promisify(fsync);

/**
 * Returns a batch's memory to the main thread, which fills it again: a pull
 * then cycles a few dozen batches instead of allocating (and, until a GC
 * finds them, holding) one per 256 KiB received.
 */
function giveBack(buffer: ArrayBufferLike): void {
  if (buffer instanceof ArrayBuffer && !buffer.detached)
    port.postMessage({ type: 'batch', buffer }, [buffer]);
}

function wire(err: unknown): WireError {
  const message = errorMessage(err);
  if (err instanceof LayerFault) return { kind: err.kind, message };
  const errno = errnoCode(err);
  if (errno !== undefined) return { kind: 'errno', message, errno };
  return { kind: 'error', message };
}

/**
 * The compressed bytes: counted and written as they arrive; their digest
 * comes with the end of the job (the main thread hashes what it sends).
 */
class BlobSink {
  /** -1: verify only, nothing written. */
  private readonly fd: number;
  bytes = 0;
  /** sha256 of everything sent, as the sender computed it. */
  sentDigest?: string;
  private open = true;

  constructor(private readonly spec: NonNullable<IngestSpec['blob']>) {
    this.fd = spec.temp === undefined ? -1 : openSync(spec.temp, 'wx', 0o600);
  }

  write(chunk: Uint8Array): void {
    this.bytes += chunk.length;
    if (this.spec.size !== undefined && this.bytes > this.spec.size) {
      throw new LayerFault(
        'mismatch',
        `blob ${this.spec.digest}: more than the announced ${this.spec.size} bytes arrived`,
      );
    }
    if (this.fd < 0) return;
    for (let off = 0; off < chunk.length;) off += writeSync(this.fd, chunk, off, chunk.length - off);
  }

  /** Verifies and (unless the caller flushes the filesystem) makes the temp file durable; the caller renames it into place. */
  async finish(): Promise<void> {
    if (this.spec.size !== undefined && this.bytes !== this.spec.size) {
      throw new LayerFault(
        'mismatch',
        `blob ${this.spec.digest}: ${this.bytes} bytes arrived, ${this.spec.size} were announced`,
      );
    }
    const actual = this.sentDigest;
    if (actual === undefined)
      throw new LayerFault('internal', `blob ${this.spec.digest}: no digest was sent`);
    if (actual !== this.spec.digest) {
      throw new LayerFault('mismatch', `blob ${this.spec.digest}: the content has digest ${actual}`);
    }
    if (this.fd >= 0 && this.spec.fsync !== false) await fsyncAsync(this.fd);
    this.close();
  }

  close(): void {
    if (!this.open) return;
    this.open = false;
    if (this.fd >= 0) closeSync(this.fd);
  }

  discard(): void {
    this.close();
    if (this.spec.temp === undefined) return;
    try {
      unlinkSync(this.spec.temp);
    } catch {
      // never created or already gone
    }
  }
}

class Job {
  private blob?: BlobSink;
  /** The bytes for the unpacker, fed from messages; acknowledged as it reads them. */
  private feed?: Readable;
  /** What the unpacker reads (the feed, or the stored blob file). */
  private source?: Readable;
  private unacked = 0;
  /** Batches the decompressor still reads from; each is handed back once it is done with it. */
  private readonly lent = new Set<ArrayBufferLike>();
  /** Stops the unpacker wherever it is (abort, a bad blob). */
  private readonly stopUnpack = new AbortController();
  /** The unpacker is done (either way) and reads no more: bytes are acknowledged on arrival. */
  private unpackOver = false;
  /** Ends the job early: the blob broke its size, or the main thread gave up. */
  private stop?: unknown;
  private ended = false;
  private readonly done: Promise<IngestResult['unpack']>;
  private resolveEnd!: () => void;
  private readonly endSeen = new Promise<void>((r) => (this.resolveEnd = r));

  constructor(
    private readonly id: number,
    spec: IngestSpec,
    file: string | undefined,
  ) {
    if (spec.blob) {
      // Its digest comes from the sender of the bytes: a file is read here, unhashed.
      if (file !== undefined)
        throw new LayerFault('internal', `blob ${spec.blob.digest}: cannot be stored from a file`);
      this.blob = new BlobSink(spec.blob);
    }
    const log = {
      warn: (obj: Record<string, unknown>, msg: string) => post({ type: 'warn', id, obj, msg }),
    };
    if (spec.unpack) {
      const source: Readable =
        file !== undefined
          ? createReadStream(file, { highWaterMark: 1024 * 1024 })
          : new Readable({ highWaterMark: 1024 * 1024, read: () => this.release() });
      if (file === undefined) this.feed = source;
      this.source = source;
      this.done = unpackInThisThread(source, {
        ...spec.unpack,
        log,
        signal: this.stopUnpack.signal,
        onTarBytes: collectSometimes,
        onConsumed: (chunk) => {
          if (this.lent.delete(chunk.buffer)) giveBack(chunk.buffer);
        },
      });
    } else {
      this.done = Promise.resolve(undefined);
    }
    this.done.then(
      () => {
        // Bytes after the end of the compressed stream are nobody's to read;
        // they still go into the blob.
        this.unpackOver = true;
        this.release();
      },
      () => {
        // The rest of the blob still arrives (and is verified: a corrupt blob
        // is reported as such, not as the bad layer it unpacks to); without a
        // blob there is nothing more to wait for.
        this.unpackOver = true;
        this.release();
        if (!this.blob) this.halt(undefined);
      },
    );
    void this.run(file !== undefined);
  }

  private release(): void {
    while (this.unacked > 0) {
      this.unacked--;
      post({ type: 'ack', id: this.id });
    }
  }

  private halt(reason: unknown): void {
    this.stop ??= reason;
    this.resolveEnd();
  }

  data(chunk: Uint8Array): void {
    if (this.stop !== undefined || this.ended) return;
    try {
      this.blob?.write(chunk);
    } catch (err) {
      this.halt(err);
      this.feed?.destroy();
      return;
    }
    if (!this.feed || this.unpackOver || this.feed.destroyed) {
      giveBack(chunk.buffer);
      post({ type: 'ack', id: this.id });
      return;
    }
    this.lent.add(chunk.buffer);
    if (!this.feed.push(chunk)) {
      this.unacked++;
      return;
    }
    post({ type: 'ack', id: this.id });
  }

  end(digest: string | undefined): void {
    if (this.ended) return;
    this.ended = true;
    if (this.blob) this.blob.sentDigest = digest;
    this.feed?.push(null);
    this.resolveEnd();
  }

  abort(message: string): void {
    this.halt(new Error(message));
    // The unpacker stops (a stored blob file is closed too).
    this.source?.destroy(new Error(message));
    this.stopUnpack.abort();
  }

  private async run(fromFile: boolean): Promise<void> {
    try {
      if (!fromFile) await this.endSeen;
      if (this.stop !== undefined) throw this.stop;
      // The blob first: a wrong blob is the registry's fault, whatever its content did.
      await this.blob?.finish();
      const unpack = await this.done;
      // Aborted while the unpacker finished from a file: still a failure.
      if (this.stop !== undefined) throw this.stop;
      post({ type: 'done', id: this.id, result: { bytes: this.blob?.bytes ?? 0, unpack } });
    } catch (err) {
      this.blob?.discard();
      this.source?.destroy();
      this.stopUnpack.abort();
      // The unpacker may still be writing: report once it has stopped.
      await this.done.catch(() => undefined);
      post({ type: 'error', id: this.id, error: wire(err) });
    } finally {
      jobs.delete(this.id);
    }
  }
}

const jobs = new Map<number, Job>();

/**
 * Every buffer this thread handles (inflated chunks mostly) is garbage soon
 * after; a full collection now and then frees the few that lived long enough
 * to be promoted (this thread's heap is a few MiB, so that costs little).
 */
const collectSometimes = gcPacer({ minorEveryBytes: 8 * 1024 * 1024, majorEveryBytes: 64 * 1024 * 1024 });

port.on('message', (m: ToWorker) => {
  if (m.type === 'start') {
    try {
      jobs.set(m.id, new Job(m.id, m.spec, m.file));
    } catch (err) {
      post({ type: 'error', id: m.id, error: wire(err) });
    }
    return;
  }
  const job = jobs.get(m.id);
  if (!job) return;
  if (m.type === 'data') {
    job.data(m.chunk);
    collectSometimes(m.chunk.length);
  } else if (m.type === 'end') job.end(m.digest);
  else job.abort(m.message);
});
