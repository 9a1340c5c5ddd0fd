import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isMountPoint, mountRootfs, removeRootfs, rootfsPaths } from './rootfs.js';

test('overlay of layers (highest wins), writes go to the upper dir, remove unmounts and deletes', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'berth-rootfs-'));
  try {
    const layers = [];
    for (let i = 0; i < 3; i++) {
      const l = join(dir, 'layers', `l${i}`, 'diff');
      await mkdir(l, { recursive: true });
      await writeFile(join(l, 'which'), `layer ${i}`);
      await writeFile(join(l, `only-${i}`), '');
      layers.push(l);
    }
    const paths = rootfsPaths(join(dir, 'containers', 'c1'));
    await mountRootfs(paths, layers);
    assert.equal(await isMountPoint(paths.merged), true);
    assert.equal(
      await readFile(join(paths.merged, 'which'), 'utf8'),
      'layer 2',
      'the last (highest) layer wins',
    );
    assert.deepEqual((await readdir(paths.merged)).sort(), ['only-0', 'only-1', 'only-2', 'which']);
    await writeFile(join(paths.merged, 'new'), 'x');
    assert.equal(await readFile(join(paths.upper, 'new'), 'utf8'), 'x');
    assert.equal(await readFile(join(layers[2], 'which'), 'utf8'), 'layer 2', 'lowers untouched');
    await removeRootfs(paths);
    assert.equal(await isMountPoint(paths.merged), false);
    await assert.rejects(stat(paths.dir), /ENOENT/);
    await removeRootfs(paths); // idempotent
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('many layers with long paths still fit the mount options; an image without layers mounts too', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'berth-rootfs-'));
  try {
    const base = join(dir, 'a-rather-long-directory-name-for-the-layer-store'.repeat(2));
    const layers = [];
    for (let i = 0; i < 60; i++) {
      const l = join(base, `sha256-${i.toString().padStart(64, '0')}`, 'diff');
      await mkdir(l, { recursive: true });
      await writeFile(join(l, `f${i}`), String(i));
      layers.push(l);
    }
    assert.ok(layers.join(':').length > 4096, 'absolute lowers would exceed a page');
    const paths = rootfsPaths(join(dir, 'c-many'));
    await mountRootfs(paths, layers);
    assert.equal((await readdir(paths.merged)).length, 60);
    await removeRootfs(paths);
    const empty = rootfsPaths(join(dir, 'c-empty'));
    await mountRootfs(empty, []);
    assert.deepEqual(await readdir(empty.merged), []);
    await removeRootfs(empty);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
