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
