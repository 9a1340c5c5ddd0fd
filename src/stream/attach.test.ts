import { after, before, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openAttach } from './attach.js';

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'berth-attach-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

it('a relay that cannot connect is refused with its own reason, naming the socket', async () => {
  const socket = join(dir, 'attach');
  await assert.rejects(openAttach(socket, join(dir, 'ctl')), (err: Error) => {
    assert.equal(err.constructor.name, 'FailedPreconditionError');
    assert.match(
      err.message,
      new RegExp(`cannot attach through ${socket}: connect: No such file or directory`),
    );
    return true;
  });
});
