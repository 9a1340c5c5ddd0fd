/**
 * syncfs(2) for the filesystem holding a path, through coreutils `sync -f`
 * (Node has no binding). One flush of everything dirty on that filesystem:
 * far cheaper than an fsync per file when a directory tree was just written.
 */
import { stat } from 'node:fs/promises';
import { run } from './run.js';

export async function syncFilesystem(path: string): Promise<void> {
  const result = await run('sync', ['--file-system', '--', path], { timeoutMs: 600_000 });
  if (result.code === 0) return;
  const why = result.timedOut
    ? 'timed out after 10 minutes'
    : result.stderr.trim() || `sync exited with ${result.code ?? result.signal}`;
  throw new Error(`cannot flush the filesystem holding ${path} to disk: ${why}`);
}

/** Whether two existing paths are on one filesystem, so one syncFilesystem flushes both. */
export async function sameFilesystem(a: string, b: string): Promise<boolean> {
  const [sa, sb] = await Promise.all([stat(a), stat(b)]);
  return sa.dev === sb.dev;
}

const ignore = () => undefined;

/**
 * Shares flushes of one filesystem among callers. A syncfs flushes all that is
 * dirty there, so a caller arriving while one runs waits for the next one
 * (which starts after its writes) together with every other such caller: at
 * most one runs and one waits, however many layers finish at once.
 */
export class FilesystemFlusher {
  private running?: Promise<void>;
  private next?: Promise<void>;

  constructor(
    private readonly path: string,
    private readonly sync: (path: string) => Promise<void> = syncFilesystem,
  ) {}

  /** Resolves once a flush that started after this call has completed. */
  flush(): Promise<void> {
    if (!this.running) return this.start();
    this.next ??= this.running.then(ignore, ignore).then(() => {
      this.next = undefined;
      return this.start();
    });
    return this.next;
  }

  private start(): Promise<void> {
    const tracked: Promise<void> = this.sync(this.path).finally(() => {
      if (this.running === tracked) this.running = undefined;
    });
    this.running = tracked;
    return tracked;
  }
}
