/**
 * Layer ingestion off the event loop. A small pool of worker threads
 * (ingest-worker.ts) does the heavy part of a pull: writing a blob as it
 * arrives, decompressing it, hashing the tar (diff ID), parsing it and
 * writing the layer's files. The main thread fills batches (a direct source's
 * socket reads into them; a stream's chunks are copied in), hashes them for
 * the blob's digest and hands them over, a few at a time (backpressure), so
 * gRPC calls stay answered while layers come in.
 */
import { createHash } from 'node:crypto';
import { availableParallelism } from 'node:os';
import type { Readable } from 'node:stream';
import { Worker } from 'node:worker_threads';
import { InternalError, UnavailableError } from '../../errors.js';
import { ContentMismatchError, LayerRejectedError } from './errors.js';
import type { FaultKind } from './faults.js';
import type { LayerLog, UnpackResult } from './writer.js';
import { gcPacer } from '../../util/gc-pacer.js';
import type { DirectSink, DirectSource } from '../registry/http1.js';

/**
 * Verify the compressed bytes' size and digest and, with `temp`, write them
 * there (fsync when whole). Without `temp` nothing is kept: the layer is
 * unpacked from verified bytes and its blob discarded.
 */
export interface BlobSpec {
  temp?: string;
  digest: string;
  size?: number;
  /**
   * false: the caller flushes the whole filesystem (syncfs) before it commits
   * the blob, so a per-file fsync would only flush the same pages twice.
   */
  fsync?: boolean;
}

export interface UnpackSpec {
  target: string;
  scratch: string;
  name: string;
  expectedDiffId?: string;
}

export interface IngestSpec {
  blob?: BlobSpec;
  unpack?: UnpackSpec;
}

export interface IngestResult {
  /** Compressed bytes received. */
  bytes: number;
  unpack?: UnpackResult;
}

/**
 * A stream from the network; a body that reads straight into the batches
 * (registry/http1.ts); or a file the worker reads itself (a stored blob).
 */
export type IngestSource = Readable | DirectSource | { file: string };

function isDirect(source: IngestSource): source is DirectSource {
  return 'direct' in source && source.direct;
}

export interface WireError {
  kind: FaultKind | 'errno' | 'error';
  message: string;
  errno?: string;
}

export type ToWorker =
  | { type: 'start'; id: number; spec: IngestSpec; file?: string }
  | { type: 'data'; id: number; chunk: Uint8Array }
  /** `digest`: of every byte sent, when the job stores a blob (hashed on this side, see runIngest). */
  | { type: 'end'; id: number; digest?: string }
  | { type: 'abort'; id: number; message: string };

export type FromWorker =
  | { type: 'ack'; id: number }
  | { type: 'batch'; buffer: ArrayBuffer }
  | { type: 'done'; id: number; result: IngestResult }
  | { type: 'error'; id: number; error: WireError }
  | { type: 'warn'; id: number; obj: Record<string, unknown>; msg: string };

/** Bytes per message to a worker: large enough that per-message costs vanish. */
const BATCH = 256 * 1024;
/**
 * A direct source's batch is handed over once less than this is free, so
 * each read still gets a good piece of the socket's buffered bytes.
 */
const MIN_READ_SPACE = 32 * 1024;
/** Batches a job may have in flight before the source is paused (1 MiB: more measured no faster, ~6 MiB more RSS). */
const MAX_IN_FLIGHT = 4;
/** Workers at most when the count is automatic. */
const MAX_AUTO_WORKERS = 4;
/** Batches kept for reuse (what a few pulls at once have in flight). */
const MAX_SPARE_BATCHES = 32;
/**
 * A worker beyond the first is stopped after this long idle (its isolate
 * costs memory). The first is kept: a new thread starts with cold code (no
 * JIT, internals to load), which made a pull after a quiet spell ~40 % slower
 * and ~0.5 CPU s dearer than a pull right after another (bench/pull), while
 * stopping it gave back ~3 MiB.
 */
export const LAYER_WORKER_IDLE_MS = 30_000;

function revive(e: WireError, what: string): Error {
  switch (e.kind) {
    case 'rejected':
      return new LayerRejectedError(e.message);
    case 'mismatch':
      return new ContentMismatchError(e.message);
    case 'internal':
      return new InternalError(e.message);
    case 'errno':
      // Local trouble (ENOSPC, EIO, ...): berth's, not the layer's; the code stays for callers.
      return Object.assign(new Error(`${what}: ${e.message}`), { code: e.errno });
    default:
      return new Error(`${what}: ${e.message}`);
  }
}

interface Pending {
  resolve(r: IngestResult): void;
  reject(e: Error): void;
  onAck(): void;
  log?: LayerLog;
  /** Names the blob or layer in errors. */
  what: string;
}

class LayerWorker {
  readonly worker: Worker;
  readonly jobs = new Map<number, Pending>();
  private idle?: NodeJS.Timeout;
  dead = false;
  /** Has run a job: only such a worker is kept warm for the daemon's life. */
  private used = false;

  constructor(private readonly onGone: (w: LayerWorker) => void) {
    this.worker = new Worker(new URL('./ingest-worker.js', import.meta.url), {
      // Buffers are external memory; the JS heap of a worker stays small.
      resourceLimits: { maxOldGenerationSizeMb: 48, maxYoungGenerationSizeMb: 8 },
    });
    this.worker.on('message', (m: FromWorker) => this.onMessage(m));
    this.worker.on('error', (err) => this.fail(err));
    this.worker.on('exit', (code) => this.fail(new Error(`layer worker exited with code ${code}`)));
  }

  private onMessage(m: FromWorker): void {
    if (m.type === 'batch') {
      if (spareBatches.length < MAX_SPARE_BATCHES && m.buffer.byteLength === BATCH)
        spareBatches.push(m.buffer);
      return;
    }
    const job = this.jobs.get(m.id);
    if (!job) return;
    switch (m.type) {
      case 'ack':
        job.onAck();
        break;
      case 'warn':
        job.log?.warn(m.obj, m.msg);
        break;
      case 'done':
        this.finished(m.id);
        job.resolve(m.result);
        break;
      case 'error':
        this.finished(m.id);
        job.reject(revive(m.error, job.what));
        break;
    }
  }

  private fail(err: Error): void {
    if (this.dead) return;
    this.dead = true;
    clearTimeout(this.idle);
    this.onGone(this);
    for (const job of this.jobs.values()) {
      job.reject(new InternalError(`${job.what}: the layer worker failed: ${err.message}`, { cause: err }));
    }
    this.jobs.clear();
  }

  add(id: number, pending: Pending): void {
    clearTimeout(this.idle);
    this.idle = undefined;
    this.used = true;
    if (this.jobs.size === 0) this.worker.ref();
    this.jobs.set(id, pending);
  }

  private finished(id: number): void {
    this.jobs.delete(id);
    if (this.jobs.size > 0 || this.dead) return;
    this.idleNow();
  }

  /** Idle: let the process exit without it, and retire it if it stays idle. */
  idleNow(): void {
    this.worker.unref();
    this.idle = setTimeout(() => this.retireIfIdle(), LAYER_WORKER_IDLE_MS);
    this.idle.unref();
  }

  private retireIfIdle(): void {
    if (this.jobs.size > 0 || this.dead) return;
    if (workers.length <= 1 && this.used) {
      // The one kept warm. Its spare batches go: back-to-back pulls reuse
      // them, an idle daemon would only carry them in its RSS.
      spareBatches.length = 0;
      return;
    }
    this.dead = true;
    this.onGone(this);
    void this.worker.terminate();
  }

  /** Terminates the thread; its jobs fail with an error naming their layer. */
  async stop(): Promise<void> {
    if (this.dead) return;
    this.fail(new Error('layer workers stopped'));
    await this.worker.terminate();
  }

  post(m: ToWorker, transfer?: ArrayBuffer[]): void {
    if (!this.dead) this.worker.postMessage(m, transfer);
  }
}

const workers: LayerWorker[] = [];
/** Network chunks are garbage once copied into a batch: collected every few MiB (see gc-pacer). */
let collectNetworkChunks: ((bytes: number) => void) | undefined;
/** Batch memory the workers are done with, filled again by the next chunks. */
const spareBatches: ArrayBuffer[] = [];

function takeBatch(): Buffer {
  const spare = spareBatches.pop();
  return spare ? Buffer.from(spare) : Buffer.allocUnsafeSlow(BATCH);
}
let nextId = 1;

let configuredWorkers = 0;

/**
 * Layer worker threads at most: `count`, or with 0 one per CPU beyond the
 * first (at most 4), leaving a CPU to the main thread and the inflating
 * thread pool. On 2 CPUs one worker pulls about as fast as two did and each
 * worker costs ~10 MiB of heap and a malloc arena.
 */
export function setLayerWorkerCount(count: number): void {
  configuredWorkers = count;
}

function workerLimit(): number {
  if (configuredWorkers > 0) return configuredWorkers;
  return Math.max(1, Math.min(availableParallelism() - 1, MAX_AUTO_WORKERS));
}

function startWorker(): LayerWorker {
  const worker = new LayerWorker((gone) => {
    const at = workers.indexOf(gone);
    if (at !== -1) workers.splice(at, 1);
    if (workers.length === 0) spareBatches.length = 0;
  });
  workers.push(worker);
  return worker;
}

/** Jobs go to the least busy worker; a new one is started while under the limit. */
function pickWorker(): LayerWorker {
  const limit = workerLimit();
  const best = workers.reduce<LayerWorker | undefined>(
    (b, w) => (b === undefined || w.jobs.size < b.jobs.size ? w : b),
    undefined,
  );
  if (!best || (best.jobs.size > 0 && workers.length < limit)) return startWorker();
  return best;
}

/**
 * Starts a layer worker now if there is none, so that its thread boots
 * (~115 ms here: an isolate and the unpack modules) while a pull is still
 * resolving its manifest and config, not after its first layer arrived.
 * One that gets no job (every layer was present) retires when idle.
 */
export function prepareLayerWorker(): void {
  if (workers.length === 0) startWorker().idleNow();
}

export interface IngestOptions {
  signal?: AbortSignal;
  log?: LayerLog;
  /** Called with the size of every chunk read from a stream source (progress, stall watchdog). */
  onBytes?: (n: number) => void;
}

/**
 * Runs one ingestion in a layer worker. A stream source is read here and
 * handed over in batches; a file source is read by the worker. On failure
 * the worker has removed the blob temp file; the unpack target may hold
 * partial content (callers use temp dirs).
 */
export function runIngest(
  spec: IngestSpec,
  source: IngestSource,
  options: IngestOptions = {},
): Promise<IngestResult> {
  const { signal } = options;
  const direct = isDirect(source) ? source : undefined;
  const stream = direct || 'file' in source ? undefined : (source as Readable);
  const file = 'file' in source ? source.file : undefined;
  if (signal?.aborted) {
    stream?.destroy();
    direct?.destroy();
    return Promise.reject(signal.reason as Error);
  }
  const id = nextId++;
  const worker = pickWorker();
  const what = spec.unpack?.name ?? spec.blob?.digest ?? 'a layer';
  return new Promise<IngestResult>((resolve, reject) => {
    let settled = false;
    /** Set once this side gave up (abort, source error): reported when the worker has stopped. */
    let failure: Error | undefined;
    let inFlight = 0;
    let batch: Buffer | undefined;
    let used = 0;
    /** The direct source was paused for backpressure. */
    let directPaused = false;
    // The blob's digest is computed here rather than in the worker, whose
    // thread is the pull's busiest (inflating aside): ~0.2 ms per batch.
    const blobHash = spec.blob ? createHash('sha256') : undefined;
    const detach = () => {
      signal?.removeEventListener('abort', onAbort);
      if (!stream) return;
      stream.off('data', onData);
      stream.off('end', onEnd);
      stream.off('error', onError);
      // Destroyed below when unfinished: its 'error' then must not go unheard.
      stream.on('error', ignoreSourceError);
    };
    // Settles only on the worker's last word (or its death): until then it
    // may still write into the caller's temp dir, which the caller removes
    // on failure.
    const settle = (err: Error | undefined, result?: IngestResult) => {
      if (settled) return;
      settled = true;
      detach();
      const why = failure ?? err;
      if (why) {
        stream?.destroy();
        direct?.destroy();
        reject(why);
      } else resolve(result!);
    };
    const giveUp = (err: Error) => {
      if (settled || failure) return;
      failure = err;
      detach();
      // Unread bytes are not wanted any more: close the connection.
      stream?.destroy();
      direct?.destroy();
      worker.post({ type: 'abort', id, message: err.message });
    };
    // A direct source's socket reads into the batch: it is handed over only
    // from `filled` (the socket asks for new space after it) or at the end,
    // never while the socket may still read into it.
    const send = () => {
      if (!batch || used === 0) return;
      blobHash?.update(batch.subarray(0, used));
      // Handed over, not copied (a batch is an ArrayBuffer of its own); the
      // worker hands it back when done with it (see takeBatch).
      worker.post({ type: 'data', id, chunk: batch.subarray(0, used) }, [batch.buffer as ArrayBuffer]);
      batch = undefined;
      used = 0;
      if (++inFlight >= MAX_IN_FLIGHT) {
        stream?.pause();
        if (direct && !directPaused) {
          directPaused = true;
          direct.pause();
        }
      }
    };
    const sink: DirectSink = {
      space: () => {
        batch ??= takeBatch();
        return batch.subarray(used);
      },
      filled: (n) => {
        if (settled || failure) return;
        options.onBytes?.(n);
        used += n;
        if (BATCH - used < MIN_READ_SPACE) send();
      },
      end: () => {
        if (!settled && !failure) onEnd();
      },
      error: (err) => onError(err),
    };
    const onData = (chunk: Buffer) => {
      options.onBytes?.(chunk.length);
      (collectNetworkChunks ??= gcPacer({ minorEveryBytes: 4 * 1024 * 1024 }))(chunk.length);
      // Network chunks are views into larger buffers (the whole of which a
      // message would copy): gathered into a batch of our own first.
      for (let off = 0; off < chunk.length;) {
        batch ??= takeBatch();
        const n = chunk.copy(batch, used, off);
        used += n;
        off += n;
        if (used === BATCH) send();
      }
    };
    const onEnd = () => {
      send();
      worker.post({ type: 'end', id, digest: blobHash && `sha256:${blobHash.digest('hex')}` });
    };
    const onError = (err: Error) => {
      giveUp(new UnavailableError(`reading ${what}: ${err.message}`, { cause: err }));
    };
    const onAbort = () => {
      const reason: unknown = signal!.reason;
      giveUp(reason instanceof Error ? reason : new UnavailableError(`ingest of ${what} cancelled`));
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    worker.add(id, {
      resolve: (r) => settle(undefined, r),
      reject: (e) => settle(e),
      onAck: () => {
        if (--inFlight >= MAX_IN_FLIGHT || settled || failure) return;
        if (stream?.isPaused()) stream.resume();
        if (directPaused) {
          directPaused = false;
          direct?.resume();
        }
      },
      log: options.log,
      what,
    });
    worker.post({ type: 'start', id, spec, file });
    direct?.start(sink);
    if (stream) {
      stream.on('data', onData);
      stream.once('end', onEnd);
      stream.once('error', onError);
      if (stream.isPaused()) stream.resume();
    }
  });
}

function ignoreSourceError(): void {}

/** Layer worker threads running now. */
export function layerWorkerCount(): number {
  return workers.length;
}

/** Their thread IDs (tests tell a kept worker from a new one by it). */
export function layerWorkerThreadIds(): number[] {
  return workers.map((w) => w.worker.threadId);
}

/** Stops every layer worker (jobs still running fail). For shutdown and tests. */
export async function stopLayerWorkers(): Promise<void> {
  const all = workers.splice(0);
  await Promise.all(all.map((w) => w.stop()));
}
