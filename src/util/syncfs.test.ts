import { it } from 'node:test';
import assert from 'node:assert/strict';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { syncFilesystem } from './syncfs.js';

it('flushes the filesystem holding a path; a missing path is an error naming it', async () => {
  await syncFilesystem(tmpdir());
  const missing = join(tmpdir(), 'berth-no-such-dir', 'layer');
  await assert.rejects(
    syncFilesystem(missing),
    (err: Error) =>
      err.message.startsWith(`cannot flush the filesystem holding ${missing} to disk:`) &&
      /No such file/.test(err.message),
  );
});
