import { describe, it, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, statfs, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { mountShm, mountsUnder, unmountAll } from './mounts.js';

const TMPFS_MAGIC = 0x01021994;

describe('pod mounts', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'berth mounts '));
  });
  after(async () => {
    await unmountAll(dir);
    await rm(dir, { recursive: true, force: true });
  });

  it('mounts a size-limited tmpfs and unmounts nested mounts deepest first, idempotently', async () => {
    // A space in the path: mountinfo escapes it as \040.
    const shm = join(dir, 'pod a', 'shm');
    await mkdir(shm, { recursive: true });
    await mountShm(shm, 1024 * 1024);
    assert.equal(Number((await statfs(shm)).type), TMPFS_MAGIC);
    const nested = join(shm, 'inner');
    await mkdir(nested);
    await mountShm(nested, 1024 * 1024);
    await writeFile(join(nested, 'x'), 'y');
    assert.deepEqual(await mountsUnder(join(dir, 'pod a')), [nested, shm]);
    // A sibling with the same prefix is not "under" it.
    assert.deepEqual(await mountsUnder(join(dir, 'pod')), []);
    await unmountAll(join(dir, 'pod a'));
    assert.deepEqual(await mountsUnder(join(dir, 'pod a')), []);
    assert.notEqual(Number((await statfs(shm)).type), TMPFS_MAGIC);
    await unmountAll(join(dir, 'pod a'));
  });
});
