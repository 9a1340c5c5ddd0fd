/**
 * Many small files: how fast berth's layer worker unpacks a layer whose
 * cost is its entries, not its bytes (base images hold 5,000-20,000 of
 * them), against GNU tar extracting the same gzip layer, from memory, one
 * after the other. Not a timed test; run by hand as root:
 *
 *   node dist/bench/pull/entries.js [--dirs 50 --files 100 --links 20 --rounds 3 --settle 40 --dir /var/tmp]
 *
 * ext4 (this host's root) slows inode allocation for a while after many
 * files were deleted ("recently deleted" inodes are skipped), so each
 * extraction goes into a fresh directory, nothing is deleted until the end,
 * and `--settle` seconds pass first.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { parseArgs } from 'node:util';
import { runChecked } from '../../src/util/run.js';
import { runIngest, stopLayerWorkers } from '../../src/image/layer/ingest.js';
import {
  compress,
  dir,
  file,
  sha256,
  symlink,
  tarEntries,
  type TarEntry,
} from '../../test/helpers/image-builder.js';
import { median } from '../lib/stats.js';

const { values: args } = parseArgs({
  options: {
    dirs: { type: 'string', default: '50' },
    files: { type: 'string', default: '100' },
    links: { type: 'string', default: '20' },
    rounds: { type: 'string', default: '3' },
    settle: { type: 'string', default: '40' },
    /** Where to extract: /dev/shm (tmpfs) leaves ext4's quirk out and measures the CPU side alone. */
    dir: { type: 'string', default: '/var/tmp' },
  },
});

async function main(): Promise<void> {
  const entries: TarEntry[] = [];
  for (let d = 0; d < Number(args.dirs); d++) {
    entries.push(dir(`usr/share/d${d}`));
    for (let f = 0; f < Number(args.files); f++) {
      entries.push(file(`usr/share/d${d}/f${f}`, Buffer.concat([randomBytes(512), Buffer.alloc(512, 120)])));
    }
    for (let l = 0; l < Number(args.links); l++) entries.push(symlink(`usr/share/d${d}/l${l}`, `f${l}`));
  }
  const tar = await tarEntries(entries);
  const blob = await compress(tar, 'gzip');
  const work = await mkdtemp(join(args.dir, 'berth-bench-entries-'));
  const layerFile = join(work, 'layer.tar.gz');
  await writeFile(layerFile, blob);
  console.log(`layer: ${entries.length} entries, ${(tar.length / 1024 / 1024).toFixed(1)} MiB tar`);
  const berthMs: number[] = [];
  const tarMs: number[] = [];
  try {
    await new Promise((r) => setTimeout(r, Number(args.settle) * 1000));
    for (let round = 0; round < Number(args.rounds); round++) {
      const tarDir = join(work, `tar-${round}`);
      await mkdir(tarDir);
      let t = performance.now();
      await runChecked('/usr/bin/tar', ['-C', tarDir, '-xzf', layerFile]);
      tarMs.push(performance.now() - t);

      const target = join(work, `berth-${round}`);
      await mkdir(join(target, 'diff'), { recursive: true });
      await mkdir(join(target, 'scratch'));
      t = performance.now();
      await runIngest(
        {
          unpack: {
            target: join(target, 'diff'),
            scratch: join(target, 'scratch'),
            name: 'entries',
            expectedDiffId: sha256(tar),
          },
        },
        Readable.from([blob]),
      );
      berthMs.push(performance.now() - t);
      console.log(
        `round ${round + 1}: berth ${berthMs.at(-1)!.toFixed(0)} ms, GNU tar ${tarMs.at(-1)!.toFixed(0)} ms`,
      );
    }
    const b = median(berthMs);
    const g = median(tarMs);
    console.log(
      `median: berth ${b.toFixed(0)} ms (${((b * 1000) / entries.length).toFixed(0)} µs per entry), ` +
        `GNU tar ${g.toFixed(0)} ms (${((g * 1000) / entries.length).toFixed(0)} µs per entry): berth/tar ${(b / g).toFixed(1)}×`,
    );
  } finally {
    await stopLayerWorkers();
    await rm(work, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
