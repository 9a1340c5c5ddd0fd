/**
 * A small ext4 filesystem in a loop-mounted image file, and the view of it a
 * power loss would leave: a copy of the image file taken while it is still
 * mounted holds what the kernel has written to the device so far and nothing
 * of the page cache. The copy is mounted (ext4 replays its journal, as at the
 * next boot) for the test to read back. Needs root, losetup and mkfs.ext4.
 */
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run, runChecked } from '../../src/util/run.js';

export class LoopFilesystem {
  private readonly mounted: string[] = [];
  private copies = 0;

  private constructor(
    private readonly work: string,
    /** Where the live filesystem is mounted. */
    readonly mountPoint: string,
  ) {}

  /** `mountOptions`: more for the live mount (e.g. `grpid`). */
  static async create(sizeMiB = 64, mountOptions: readonly string[] = []): Promise<LoopFilesystem> {
    const work = await mkdtemp(join(tmpdir(), 'berth-power-loss-'));
    const fs = new LoopFilesystem(work, join(work, 'live'));
    try {
      await runChecked('truncate', ['-s', `${sizeMiB}M`, fs.image]);
      // No lazy init: its background zeroing would write to the device while a copy is taken.
      await runChecked('mkfs.ext4', ['-q', '-F', '-E', 'lazy_itable_init=0,lazy_journal_init=0', fs.image]);
      await mkdir(fs.mountPoint);
      // noauto_da_alloc: ext4 otherwise starts writeback at close of a file truncated to zero
      // first (copyFile does that), which hides a missing fsync without guaranteeing anything.
      await runChecked('mount', [
        '-o',
        ['loop', 'noauto_da_alloc', ...mountOptions].join(','),
        fs.image,
        fs.mountPoint,
      ]);
      fs.mounted.push(fs.mountPoint);
    } catch (err) {
      await fs.close();
      throw err;
    }
    return fs;
  }

  private get image(): string {
    return join(this.work, 'disk.img');
  }

  /** Mounts what the device holds right now (the state after a power cut) and returns where. */
  async afterPowerLoss(): Promise<string> {
    const n = ++this.copies;
    const copy = join(this.work, `copy-${n}.img`);
    const target = join(this.work, `after-power-loss-${n}`);
    await runChecked('cp', ['--sparse=always', this.image, copy]);
    await mkdir(target);
    // Read-write, so ext4 replays the journal as it would at the next boot.
    await runChecked('mount', ['-o', 'loop', copy, target]);
    this.mounted.push(target);
    return target;
  }

  async close(): Promise<void> {
    for (const target of this.mounted.splice(0).reverse()) await run('umount', [target]);
    await rm(this.work, { recursive: true, force: true });
  }
}
