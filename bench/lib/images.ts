/**
 * The two images the pod benchmarks run (pod-start, stream), as docker-save archives so both
 * berth (`berth image import`) and containerd (`ctr images import`) load the
 * same bytes without a registry: a busybox workload and a catatonit pause
 * (the same pause process berth's built-in pause runs).
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { buildImage, file, writeDockerArchive } from '../../test/helpers/image-builder.js';

export const WORKLOAD_IMAGE = 'berth.bench/busybox:1';
export const PAUSE_IMAGE = 'berth.bench/pause:1';

export async function writeBenchImages(dir: string): Promise<{ workload: string; pause: string }> {
  const workload = await buildImage({ config: { cmd: ['/bin/sleep', '86400'] } });
  const catatonit = await readFile('/usr/bin/catatonit');
  const pause = await buildImage({
    base: false,
    layers: [{ entries: [file('catatonit', catatonit, { mode: 0o755 })] }],
    config: { entrypoint: ['/catatonit', '-P'] },
  });
  const paths = { workload: join(dir, 'workload.tar'), pause: join(dir, 'pause.tar') };
  await writeDockerArchive(paths.workload, [{ image: workload, repoTags: [WORKLOAD_IMAGE] }]);
  await writeDockerArchive(paths.pause, [{ image: pause, repoTags: [PAUSE_IMAGE] }]);
  return paths;
}
