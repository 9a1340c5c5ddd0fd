/**
 * The least work an unpacking pull does, done as leanly as Node allows, for
 * comparison with berth's pull and skopeo's blob copy: every layer from
 * memory (no network, no registry), its bytes sent in 256 KiB batches to
 * worker threads (hashed on the way, as berth does), each worker writing the
 * blob, inflating it (zlib in the thread pool), hashing the tar and writing
 * each file's bytes with one writeSync per piece. Nothing is checked (no
 * path rules, no owners, modes or links, no digest comparison) and nothing
 * is made durable. What this takes is what no amount of work on berth's
 * own code could go below on this host.
 */
import { createHash } from 'node:crypto';
import { closeSync, mkdirSync, openSync, rmSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { createGunzip } from 'node:zlib';
import { Worker, isMainThread, parentPort } from 'node:worker_threads';

const BATCH = 256 * 1024;
const BLOCK = 512;

type ToFloorWorker =
  { type: 'start'; dir: string } | { type: 'data'; chunk: Uint8Array } | { type: 'end'; digest: string };

/** Best of `rounds` wall times (ms) for all `layers` through `workers` threads. */
export async function leanUnpackMs(
  layers: readonly { data: Buffer }[],
  workers: number,
  scratchDir: string,
  rounds = 3,
): Promise<number> {
  const threads = Array.from({ length: workers }, () => new Worker(new URL(import.meta.url)));
  let best = Infinity;
  try {
    for (let round = 0; round < rounds; round++) {
      rmSync(scratchDir, { recursive: true, force: true });
      mkdirSync(scratchDir, { recursive: true });
      const started = performance.now();
      let next = 0;
      await Promise.all(
        threads.map(async (thread) => {
          while (next < layers.length) {
            const index = next++;
            const data = layers[index]!.data;
            const done = new Promise((resolve) => thread.once('message', resolve));
            thread.postMessage({
              type: 'start',
              dir: join(scratchDir, String(index)),
            } satisfies ToFloorWorker);
            const hash = createHash('sha256');
            for (let at = 0; at < data.length; at += BATCH) {
              const chunk = Buffer.from(data.subarray(at, at + BATCH));
              hash.update(chunk);
              thread.postMessage({ type: 'data', chunk } satisfies ToFloorWorker, [chunk.buffer]);
            }
            thread.postMessage({ type: 'end', digest: hash.digest('hex') } satisfies ToFloorWorker);
            await done;
          }
        }),
      );
      best = Math.min(best, performance.now() - started);
    }
  } finally {
    await Promise.all(threads.map((t) => t.terminate()));
    rmSync(scratchDir, { recursive: true, force: true });
  }
  return best;
}

/** One layer in a worker: blob written, tar inflated, hashed and split into files. */
class LeanLayer {
  private readonly blob: number;
  private readonly inflate = createGunzip({ chunkSize: BATCH });
  private readonly tarHash = createHash('sha256');
  private pending = Buffer.alloc(0);
  private file = -1;
  private fileLeft = 0;
  private padding = 0;
  private files = 0;

  constructor(private readonly dir: string) {
    mkdirSync(dir);
    this.blob = openSync(join(dir, 'blob'), 'w');
    this.inflate.on('data', (tar: Buffer) => this.consume(tar));
    this.inflate.on('end', () => {
      closeSync(this.blob);
      this.tarHash.digest();
      parentPort!.postMessage('done');
    });
  }

  data(chunk: Buffer): void {
    writeSync(this.blob, chunk);
    this.inflate.write(chunk);
  }

  end(): void {
    this.inflate.end();
  }

  private consume(tar: Buffer): void {
    this.tarHash.update(tar);
    const buf = this.pending.length > 0 ? Buffer.concat([this.pending, tar]) : tar;
    let at = 0;
    while (at < buf.length) {
      if (this.fileLeft > 0) {
        const n = Math.min(this.fileLeft, buf.length - at);
        writeSync(this.file, buf, at, n);
        this.fileLeft -= n;
        at += n;
        if (this.fileLeft === 0) closeSync(this.file);
      } else if (this.padding > 0) {
        const n = Math.min(this.padding, buf.length - at);
        this.padding -= n;
        at += n;
      } else {
        if (buf.length - at < BLOCK) break;
        if (buf[at] === 0) {
          at = buf.length; // the end-of-archive blocks
          break;
        }
        const size = parseInt(
          buf
            .toString('latin1', at + 124, at + 136)
            .replace(/\0.*$/, '')
            .trim() || '0',
          8,
        );
        at += BLOCK;
        if (size > 0) {
          this.file = openSync(join(this.dir, `f${this.files++}`), 'w');
          this.fileLeft = size;
          this.padding = (BLOCK - (size % BLOCK)) % BLOCK;
        }
      }
    }
    this.pending = Buffer.from(buf.subarray(at));
  }
}

if (!isMainThread) {
  let layer: LeanLayer | undefined;
  parentPort!.on('message', (m: ToFloorWorker) => {
    if (m.type === 'start') layer = new LeanLayer(m.dir);
    else if (m.type === 'data') layer!.data(Buffer.from(m.chunk.buffer, m.chunk.byteOffset, m.chunk.length));
    else layer!.end();
  });
}
