import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MonitorGoneError } from '../src/oci/types.js';
import { ExitWatcher } from './exits.js';

async function withWatcher(fn: (watcher: ExitWatcher, exitDir: string) => Promise<void>): Promise<void> {
  const runRoot = await mkdtemp(join(tmpdir(), 'berth-exits-'));
  const exitDir = join(runRoot, 'exits');
  const watcher = new ExitWatcher({ runRoot, exitDir });
  try {
    await fn(watcher, exitDir);
  } finally {
    watcher.close();
    await rm(runRoot, { recursive: true, force: true });
  }
}

test('an exit file resolves the wait with its code', () =>
  withWatcher(async (watcher, exitDir) => {
    const waiting = watcher.wait('c1', undefined, () => Promise.resolve(true));
    await writeFile(join(exitDir, 'c1'), '7');
    assert.equal((await waiting).exitCode, 7);
  }));

test('a conmon that is gone with no exit recorded rejects the wait with MonitorGoneError', () =>
  withWatcher(async (watcher) => {
    const started = Date.now();
    await assert.rejects(
      watcher.wait('c2', undefined, () => Promise.resolve(false)),
      (err: Error) => err instanceof MonitorGoneError && err.message.includes('c2'),
    );
    assert.ok(Date.now() - started < 5_000);
  }));

test('an exit recorded just before conmon ended wins over "gone"', () =>
  withWatcher(async (watcher, exitDir) => {
    // The liveness probe is where conmon finishes: it writes the exit, then ends.
    const exit = await watcher.wait('c3', undefined, async () => {
      await writeFile(join(exitDir, 'c3'), '0');
      return false;
    });
    assert.equal(exit.exitCode, 0);
  }));

test('without a liveness probe the wait goes on until aborted', () =>
  withWatcher(async (watcher) => {
    await assert.rejects(
      watcher.wait('c4', AbortSignal.timeout(4_500)),
      (err: Error) => !(err instanceof MonitorGoneError),
    );
  }));
