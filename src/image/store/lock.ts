/**
 * A cross-process lock file (Node has no flock): created with O_EXCL and
 * holding the owner's pid; a lock whose owner died is broken. Held only for
 * the short read-modify-write of the image index.
 */
import { open, readFile, stat, unlink } from 'node:fs/promises';
import { errnoCode, UnavailableError } from '../../errors.js';
import { pidAlive } from './temp.js';

export class FileLock {
  private queue: Promise<void> = Promise.resolve();

  constructor(
    private readonly path: string,
    private readonly timeoutMs = 60_000,
  ) {}

  /** Runs `fn` holding the lock (in-process callers queue first). */
  async with<T>(fn: () => Promise<T>): Promise<T> {
    const previous = this.queue;
    let release!: () => void;
    this.queue = new Promise<void>((resolve) => (release = resolve));
    await previous;
    try {
      await this.acquire();
      try {
        return await fn();
      } finally {
        await unlink(this.path).catch(() => undefined);
      }
    } finally {
      release();
    }
  }

  private async acquire(): Promise<void> {
    const deadline = Date.now() + this.timeoutMs;
    for (;;) {
      try {
        const handle = await open(this.path, 'wx', 0o600);
        await handle.writeFile(String(process.pid));
        await handle.close();
        return;
      } catch (err) {
        if (errnoCode(err) !== 'EEXIST') throw err;
      }
      const owner = Number((await readFile(this.path, 'utf8').catch(() => '')).trim());
      // Our own pid cannot hold it (in-process callers are queued): a leftover of a previous run.
      if (!Number.isInteger(owner) || owner <= 0 || owner === process.pid || !pidAlive(owner)) {
        // An empty file may be a lock being written right now; give it a moment first.
        if (owner > 0 || (await olderThan(this.path, 2000))) {
          await unlink(this.path).catch(() => undefined);
          continue;
        }
      }
      if (Date.now() > deadline) {
        throw new UnavailableError(`image store is locked by process ${owner} (${this.path}); try again`);
      }
      await new Promise((r) => setTimeout(r, 20));
    }
  }
}

async function olderThan(path: string, ms: number): Promise<boolean> {
  try {
    return Date.now() - (await stat(path)).mtimeMs > ms;
  } catch {
    return true;
  }
}
