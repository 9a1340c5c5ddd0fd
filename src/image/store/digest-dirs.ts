/**
 * A directory of trees named by digest, each made under a temp name and
 * renamed whole (a tree that exists is complete) and removed by renaming it
 * out of the way first (a half-removed tree never looks whole). Unpacked
 * layers and artifacts' file trees are kept this way.
 */
import { mkdir, readdir, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { errnoCode } from '../../errors.js';
import type { Logger } from '../../log.js';
import type { Digest } from '../types.js';
import { digestHex } from './blobs.js';
import { leftBehind, tempName } from './temp.js';

export class DigestDirs {
  constructor(
    readonly dir: string,
    protected readonly log: Logger,
    /** Names the trees in log lines ("layer", "artifact"). */
    private readonly kind: string,
  ) {}

  async init(): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    // Half-made or half-removed trees of dead processes.
    for (const name of await readdir(this.dir)) {
      if (name.startsWith('.') && leftBehind(name)) {
        this.log.info({ dir: name }, `removing an incomplete ${this.kind} directory left by an earlier run`);
        await rm(join(this.dir, name), { recursive: true, force: true });
      }
    }
  }

  /** Where the tree of `digest` lives once complete. */
  protected treeDir(digest: Digest): string {
    return join(this.dir, digestHex(digest));
  }

  /** A temp path beside the trees, for one being made (removed at start-up if its process died). */
  protected tempDir(label: string): string {
    return join(this.dir, `.${tempName(label)}`);
  }

  protected async isDir(path: string): Promise<boolean> {
    try {
      return (await stat(path)).isDirectory();
    } catch (err) {
      if (errnoCode(err) === 'ENOENT') return false;
      throw err;
    }
  }

  async remove(digest: Digest): Promise<void> {
    const doomed = this.tempDir(`rm-${digestHex(digest).slice(0, 16)}`);
    try {
      await rename(this.treeDir(digest), doomed);
    } catch (err) {
      if (errnoCode(err) === 'ENOENT') return;
      throw err;
    }
    await rm(doomed, { recursive: true, force: true });
  }

  /** Trees not in `keep` whose directory was last changed before `cutoff` (ms since the epoch). */
  async staleTrees(keep: ReadonlySet<string>, cutoff: number): Promise<Digest[]> {
    const stale: Digest[] = [];
    for (const digest of await this.list()) {
      if (keep.has(digest)) continue;
      const changed = (await stat(this.treeDir(digest)).catch(() => undefined))?.mtimeMs ?? Infinity;
      if (changed < cutoff) stale.push(digest);
    }
    return stale;
  }

  /** The digests of every complete tree. */
  async list(): Promise<Digest[]> {
    return (await readdir(this.dir)).filter((n) => /^[a-f0-9]{64}$/.test(n)).map((n) => `sha256:${n}`);
  }
}
