import { it } from 'node:test';
import assert from 'node:assert/strict';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FilesystemFlusher, syncFilesystem } from './syncfs.js';

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

/** A stand-in for syncfs whose runs the test ends by hand. */
function manualSync() {
  const runs: { started: number; finish: (err?: Error) => void }[] = [];
  let clock = 0;
  return {
    runs,
    sync: () =>
      new Promise<void>((resolve, reject) => {
        runs.push({ started: ++clock, finish: (err) => (err ? reject(err) : resolve()) });
      }),
  };
}

const tick = () => new Promise((resolve) => setImmediate(resolve));

it('flushes asked for while one runs share the next one, which starts after them', async () => {
  const manual = manualSync();
  const flusher = new FilesystemFlusher('/unused', manual.sync);
  const done: number[] = [];
  const first = flusher.flush().then(() => done.push(0));
  await tick();
  const later = [1, 2, 3, 4, 5].map((i) => flusher.flush().then(() => done.push(i)));
  await tick();
  assert.equal(manual.runs.length, 1, 'the later callers do not start a flush of their own');
  manual.runs[0].finish();
  await first;
  await tick();
  assert.deepEqual(done, [0], 'the later callers wait for a flush that started after they asked');
  assert.equal(manual.runs.length, 2);
  manual.runs[1].finish();
  await Promise.all(later);
  assert.deepEqual(done.sort(), [0, 1, 2, 3, 4, 5]);
  assert.equal(manual.runs.length, 2, 'six callers, two flushes');
  // Idle again: the next caller starts one at once.
  const again = flusher.flush();
  await tick();
  assert.equal(manual.runs.length, 3);
  manual.runs[2].finish();
  await again;
});

it('a failed flush fails every caller that shares it, and the next caller tries again', async () => {
  const manual = manualSync();
  const flusher = new FilesystemFlusher('/unused', manual.sync);
  const first = flusher.flush();
  await tick();
  const shared = [flusher.flush(), flusher.flush()];
  manual.runs[0].finish();
  await first;
  await tick();
  manual.runs[1].finish(new Error('EIO'));
  for (const p of shared) await assert.rejects(p, /EIO/);
  const retry = flusher.flush();
  await tick();
  assert.equal(manual.runs.length, 3);
  manual.runs[2].finish();
  await retry;
});
