/**
 * syncfs(2) for the filesystem holding a path, through coreutils `sync -f`
 * (Node has no binding). One flush of everything dirty on that filesystem:
 * far cheaper than an fsync per file when a directory tree was just written.
 */
import { CommandError, run } from './run.js';

export async function syncFilesystem(path: string): Promise<void> {
  const argv = ['sync', '--file-system', '--', path];
  const result = await run(argv[0]!, argv.slice(1), { timeoutMs: 600_000 });
  if (result.code !== 0) throw new CommandError(argv, result);
}
