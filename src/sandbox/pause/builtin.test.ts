import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { copyFile, mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import { LoopFilesystem } from '../../../test/helpers/power-loss.js';
import { BerthError } from '../../errors.js';
import { ensureBuiltinPause, PAUSE_BINARY } from './builtin.js';

describe('built-in pause rootfs', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'berth-pause-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('is built once from the binary, with the runtime mount points, and rebuilt when the binary changes', async () => {
    const binary = join(dir, 'catatonit');
    await copyFile('/usr/bin/catatonit', binary);
    const root = join(dir, 'root');
    const rootfs = await ensureBuiltinPause(root, binary);
    const installed = await stat(join(rootfs, PAUSE_BINARY));
    assert.equal(installed.mode & 0o777, 0o755);
    assert.equal(installed.size, (await stat(binary)).size);
    assert.deepEqual((await readdir(rootfs)).sort(), ['catatonit', 'dev', 'etc', 'proc', 'sys', 'tmp']);
    // Again: the same directory, not rebuilt.
    assert.equal(await ensureBuiltinPause(root, binary), rootfs);
    assert.equal((await stat(join(rootfs, PAUSE_BINARY))).ino, installed.ino);
    // A leftover temp build is swept; a new binary gets a new directory and the old one goes.
    await writeFile(join(root, 'pause', '.build-deadbeef'), 'half');
    await writeFile(binary, 'another binary');
    // The old build stays while a pod uses it.
    const next = await ensureBuiltinPause(root, binary, new Set([rootfs]));
    assert.notEqual(next, rootfs);
    assert.deepEqual(
      (await readdir(join(root, 'pause'))).sort(),
      [rootfs.split('/').at(-2), next.split('/').at(-2)].sort(),
    );
    assert.equal(await ensureBuiltinPause(root, binary), next);
    assert.deepEqual(await readdir(join(root, 'pause')), [next.split('/').at(-2)]);
  });

  it('is on the disk whole once built: a power loss right after leaves the binary intact', async () => {
    const disk = await LoopFilesystem.create();
    try {
      const rootfs = await ensureBuiltinPause(join(disk.mountPoint, 'root'), '/usr/bin/catatonit');
      const crashed = await disk.afterPowerLoss();
      const relative = rootfs.slice(disk.mountPoint.length);
      const back = await readFile(join(crashed, relative, PAUSE_BINARY)).catch(() => Buffer.alloc(0));
      assert.ok(
        back.equals(await readFile('/usr/bin/catatonit')),
        `pause binary: ${back.length} bytes on the disk`,
      );
    } finally {
      await disk.close();
    }
  });

  it('names the missing binary and the alternative', async () => {
    await assert.rejects(
      ensureBuiltinPause(join(dir, 'root2'), join(dir, 'no-such-catatonit')),
      (err: unknown) =>
        err instanceof BerthError &&
        err.code === status.FAILED_PRECONDITION &&
        /no-such-catatonit \(Debian package catatonit\), or set runtime\.pause_image/.test(err.message),
    );
  });
});
