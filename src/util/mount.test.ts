import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { access, mkdir, mkdtemp, readFile, rm, statfs, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MOUNT_HELPER, mountFs, newNetnsAt, preferUtilLinux, unmount } from './mount.js';

const NSFS_MAGIC = 0x6e736673;
const TMPFS_MAGIC = 0x01021994;
const OVERLAYFS_MAGIC = 0x794c7630;

async function mounted(path: string): Promise<boolean> {
  const info = await readFile('/proc/self/mountinfo', 'utf8');
  return info.split('\n').some((line) => line.split(' ')[4] === path);
}

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'berth-mount-'));
});
after(async () => {
  preferUtilLinux(false);
  await rm(dir, { recursive: true, force: true });
});

it('the helper was built (gcc is part of the set-up)', async () => {
  await access(MOUNT_HELPER);
});

for (const backend of ['berth-mount', 'util-linux'] as const) {
  describe(`mounts through ${backend}`, () => {
    before(() => preferUtilLinux(backend === 'util-linux'));

    it('mounts a tmpfs with flags and data, unmounts it, and says when nothing was mounted', async () => {
      const target = join(dir, `${backend}-shm`);
      await mkdir(target);
      await mountFs('tmpfs', 'shm', target, ['nosuid', 'nodev', 'noexec', 'mode=1777', 'size=1m']);
      assert.equal(Number((await statfs(target)).type), TMPFS_MAGIC);
      const line = (await readFile('/proc/self/mountinfo', 'utf8'))
        .split('\n')
        .find((l) => l.includes(target))!;
      assert.match(line, /nosuid/);
      assert.match(line, /nodev/);
      assert.match(line, /noexec/);
      assert.match(line, /size=1024k/);
      assert.equal(await unmount(target), true);
      assert.equal(await mounted(target), false);
      assert.equal(await unmount(target), false);
    });

    it('mounts an overlay with lower dirs relative to cwd; detached by a lazy unmount', async () => {
      const base = join(dir, `${backend}-ov`);
      for (const d of ['lower', 'upper', 'work', 'merged']) await mkdir(join(base, d), { recursive: true });
      await writeFile(join(base, 'lower', 'f'), 'from lower');
      await mountFs(
        'overlay',
        'overlay',
        join(base, 'merged'),
        ['lowerdir=lower,upperdir=upper,workdir=work'],
        base,
      );
      assert.equal(Number((await statfs(join(base, 'merged'))).type), OVERLAYFS_MAGIC);
      assert.equal(await readFile(join(base, 'merged', 'f'), 'utf8'), 'from lower');
      assert.equal(await unmount(join(base, 'merged'), true), true);
      assert.equal(await mounted(join(base, 'merged')), false);
    });

    it('a failed mount names the filesystem, the target and the cause', async () => {
      await assert.rejects(
        mountFs('overlay', 'overlay', join(dir, 'no-such-target'), ['lowerdir=/nonexistent']),
        (err: Error) => {
          assert.match(
            err.message,
            /mounting overlay at .*no-such-target: .*(No such file|does not exist|special device)/i,
          );
          return true;
        },
      );
    });

    it('makes a network namespace that outlives the process', async () => {
      const file = join(dir, `${backend}-netns`);
      await writeFile(file, '');
      await newNetnsAt(file);
      assert.equal(Number((await statfs(file)).type), NSFS_MAGIC);
      assert.equal(await unmount(file, true), true);
      assert.notEqual(Number((await statfs(file)).type), NSFS_MAGIC);
    });
  });
}
