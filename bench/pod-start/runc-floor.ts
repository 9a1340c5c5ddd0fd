/**
 * The floor under any runtime's container start: `runc run -d` of a busybox
 * bundle like the benchmark's workload, then `runc delete -f`.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import { makeBusyboxRootfs, minimalSpec, testId } from '../../test/helpers/oci-bundle.js';
import { runChecked } from '../../src/util/run.js';
import { msSince } from '../lib/stats.js';

const RUNC = '/usr/sbin/runc';

function runDetached(args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    // Detached runc keeps no stdio of ours; the container gets /dev/null.
    const child = spawn(RUNC, args, { stdio: 'ignore' });
    child.once('error', reject);
    child.once('exit', (code) =>
      code === 0 ? resolve() : reject(new Error(`runc ${args.join(' ')}: ${code}`)),
    );
  });
}

export async function measureRuncFloor(runs: number): Promise<number[]> {
  const dir = await mkdtemp(join(tmpdir(), 'berth-bench-runc-'));
  const root = join(dir, 'runc-root');
  const bundle = join(dir, 'bundle');
  const samples: number[] = [];
  try {
    await makeBusyboxRootfs(join(bundle, 'rootfs'));
    for (let i = 0; i < runs; i++) {
      const id = testId('floor');
      await writeFile(
        join(bundle, 'config.json'),
        JSON.stringify(minimalSpec(join(bundle, 'rootfs'), ['/bin/sleep', '86400'])),
      );
      const start = process.hrtime.bigint();
      await runDetached(['--root', root, 'run', '-d', '--bundle', bundle, id]);
      samples.push(msSince(start));
      await runChecked(RUNC, ['--root', root, 'delete', '-f', id]);
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  return samples;
}
