/**
 * Container exits as conmon records them: `<exit_dir>/<id>` holds the exit
 * code (conmon writes it atomically), its mtime is the finish time, and an
 * `oom` file in the persist dir marks an OOM kill. One fs.watch on the exit
 * dir wakes waiters; a slow poll covers events fs.watch can miss and notices
 * a conmon that died without recording an exit.
 */
import { watch, type FSWatcher } from 'node:fs';
import { access, mkdir, readFile, readdir, stat } from 'node:fs/promises';
import { errnoCode } from '../src/errors.js';
import { MonitorGoneError, type ExitInfo } from '../src/oci/types.js';
import { exitFile, oomFile, type ConmonLayout } from './layout.js';

/**
 * The slow poll: every POLL_MS each waiter's conmon is asked whether it
 * lives, and the exit dir is listed for exits fs.watch missed. The waiters
 * are taken in POLL_SLICES turns spread over the period: with a few hundred
 * containers, asking all at once held the event loop for 20-30 ms.
 */
const POLL_MS = 2000;
const POLL_SLICES = 8;

/** Reads a recorded exit; undefined while the container has not exited. */
export async function readExit(layout: ConmonLayout, id: string): Promise<ExitInfo | undefined> {
  const path = exitFile(layout, id);
  let text: string;
  let mtimeNs: bigint;
  try {
    const [content, info] = await Promise.all([readFile(path, 'utf8'), stat(path, { bigint: true })]);
    text = content;
    mtimeNs = info.mtimeNs;
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return undefined;
    throw err;
  }
  const code = Number.parseInt(text.trim(), 10);
  let oomKilled = false;
  try {
    await access(oomFile(layout, id));
    oomKilled = true;
  } catch {
    // no OOM recorded
  }
  // conmon writes -1 when it could not learn the status (e.g. timed out exec).
  return { exitCode: Number.isInteger(code) ? code : -1, finishedAtNs: mtimeNs, oomKilled };
}

/** Waits for exit files, sharing one directory watch among all waiters. */
export class ExitWatcher {
  private watcher?: FSWatcher;
  private poller?: NodeJS.Timeout;
  private readonly waiters = new Map<string, Set<(fromPoll: boolean) => void>>();
  private polling = false;
  private slice = 0;

  constructor(private readonly layout: ConmonLayout) {}

  /**
   * Resolves with the container's exit once conmon records it. With
   * `monitorAlive`, each slow poll that finds no exit also asks whether conmon
   * still runs; when it does not (and a second read finds no exit, since conmon
   * records the exit before it ends) the wait rejects with MonitorGoneError.
   */
  async wait(id: string, signal?: AbortSignal, monitorAlive?: () => Promise<boolean>): Promise<ExitInfo> {
    await mkdir(this.layout.exitDir, { recursive: true });
    signal?.throwIfAborted();
    return new Promise<ExitInfo>((resolve, reject) => {
      let checking = false;
      let again = false;
      let polled = false;
      const look = async (): Promise<ExitInfo | 'gone' | undefined> => {
        if (polled && monitorAlive) {
          // The poll's listing found no exit file: only a dead conmon makes one worth reading.
          polled = false;
          if (await monitorAlive()) return undefined;
          // conmon records the exit before it ends: read after the death, not before.
          return (await readExit(this.layout, id)) ?? 'gone';
        }
        return readExit(this.layout, id);
      };
      const check = (fromPoll: boolean) => {
        if (fromPoll) polled = true;
        if (checking) {
          again = true;
          return;
        }
        checking = true;
        look().then(
          (result) => {
            checking = false;
            if (result === 'gone') {
              done();
              reject(new MonitorGoneError(id));
            } else if (result) {
              done();
              resolve(result);
            } else if (again) {
              again = false;
              check(false);
            }
          },
          (err: unknown) => {
            checking = false;
            done();
            reject(err instanceof Error ? err : new Error(String(err)));
          },
        );
      };
      const onAbort = () => {
        done();
        reject(signal?.reason instanceof Error ? signal.reason : new Error('wait for exit aborted'));
      };
      const done = () => {
        signal?.removeEventListener('abort', onAbort);
        this.remove(id, check);
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.add(id, check);
      check(false);
    });
  }

  private add(id: string, callback: (fromPoll: boolean) => void): void {
    let set = this.waiters.get(id);
    if (!set) this.waiters.set(id, (set = new Set()));
    set.add(callback);
    this.ensureWatching();
  }

  private remove(id: string, callback: (fromPoll: boolean) => void): void {
    const set = this.waiters.get(id);
    set?.delete(callback);
    if (set?.size === 0) this.waiters.delete(id);
    if (this.waiters.size === 0) this.stopWatching();
  }

  private notify(id: string | undefined, fromPoll = false): void {
    if (id !== undefined) {
      for (const callback of this.waiters.get(id) ?? []) callback(fromPoll);
      return;
    }
    for (const set of this.waiters.values()) for (const callback of set) callback(fromPoll);
  }

  /** One turn of the slow poll: exits the listing shows, and one slice of liveness checks. */
  private async pollSlice(): Promise<void> {
    if (this.polling) return;
    this.polling = true;
    const slice = this.slice;
    this.slice = (slice + 1) % POLL_SLICES;
    try {
      let recorded: Set<string> | undefined;
      try {
        recorded = new Set(await readdir(this.layout.exitDir));
      } catch {
        recorded = undefined; // unreadable: everyone reads their own file
      }
      let index = 0;
      for (const id of [...this.waiters.keys()]) {
        if (!recorded || recorded.has(id)) this.notify(id);
        else if (index % POLL_SLICES === slice) this.notify(id, true);
        index++;
      }
    } finally {
      this.polling = false;
    }
  }

  private ensureWatching(): void {
    if (!this.watcher) {
      try {
        this.watcher = watch(this.layout.exitDir, { persistent: false }, (_event, filename) => {
          // conmon writes <id> through a temp file and a rename; both name the file.
          const name = filename?.toString();
          this.notify(name && this.waiters.has(name) ? name : name ? '' : undefined);
        });
        this.watcher.on('error', () => this.restartWatch());
      } catch {
        this.watcher = undefined; // the poll still covers us
      }
    }
    if (!this.poller) {
      // Kept referenced: a pending wait is work in progress.
      this.poller = setInterval(() => void this.pollSlice(), POLL_MS / POLL_SLICES);
    }
  }

  private restartWatch(): void {
    this.watcher?.close();
    this.watcher = undefined;
    if (this.waiters.size > 0) this.ensureWatching();
  }

  private stopWatching(): void {
    this.watcher?.close();
    this.watcher = undefined;
    if (this.poller) clearInterval(this.poller);
    this.poller = undefined;
  }

  close(): void {
    this.waiters.clear();
    this.stopWatching();
  }
}
