/**
 * An image imported just before a power loss (test/helpers/power-loss.ts): if
 * the store lists it afterwards, every layer file is there with its bytes.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { lstat, readdir, readFile, readlink } from 'node:fs/promises';
import { join } from 'node:path';
import { buildImage, file, writeDockerArchive } from '../../../test/helpers/image-builder.js';
import { LoopFilesystem } from '../../../test/helpers/power-loss.js';
import { silentLogger } from '../../log.js';
import { stopLayerWorkers } from '../layer/ingest.js';
import { ImageStore } from '../store/store.js';
import { importArchive } from './archive.js';

let disk: LoopFilesystem;
before(async () => {
  disk = await LoopFilesystem.create(128);
});
after(async () => {
  await stopLayerWorkers();
  await disk?.close();
});

/** Regular files by content, symlinks by target, directories recursively: `b` holds all of `a`. */
async function assertSameTree(a: string, b: string): Promise<number> {
  let files = 0;
  for (const name of await readdir(a)) {
    const [pa, pb] = [join(a, name), join(b, name)];
    const st = await lstat(pa);
    if (st.isDirectory()) files += await assertSameTree(pa, pb);
    else if (st.isSymbolicLink()) assert.equal(await readlink(pb), await readlink(pa), pb);
    else if (st.isFile()) {
      const back = await readFile(pb).catch(() => Buffer.alloc(0));
      assert.ok(back.equals(await readFile(pa)), `${pb}: ${back.length} of ${st.size} bytes`);
      files++;
    }
  }
  return files;
}

test('an image the store lists after a power loss is whole', { timeout: 120_000 }, async () => {
  const image = await buildImage({
    layers: [
      { entries: [file('data/blob', randomBytes(400_000)), file('data/text', 'line\n'.repeat(5000))] },
    ],
  });
  const archive = join(disk.mountPoint, 'save.tar');
  await writeDockerArchive(archive, [{ image, repoTags: ['durable:1'] }]);
  const store = await ImageStore.open(join(disk.mountPoint, 'root'), silentLogger);
  const [imported] = await importArchive(archive, store, { log: silentLogger });
  const record = (await store.list()).find((i) => i.id === imported!.id)!;

  const crashed = await disk.afterPowerLoss();
  const after = await ImageStore.open(join(crashed, 'root'), silentLogger);
  const listed = (await after.list()).find((i) => i.id === imported!.id);
  assert.ok(listed, 'the import had returned: its image must survive');
  const live = store.layerDirs(record);
  const back = after.layerDirs(listed);
  assert.equal(back.length, live.length);
  let files = 0;
  for (const [i, dir] of live.entries()) files += await assertSameTree(dir, back[i]!);
  assert.ok(files >= 4, `${files} files compared`);
});
