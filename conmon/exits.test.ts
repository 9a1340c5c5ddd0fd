import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
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

test('an exit the directory watch cannot see (the dir was replaced) is found by the poll', () =>
  withWatcher(async (watcher, exitDir) => {
    const waiting = watcher.wait('c5', undefined, () => Promise.resolve(true));
    await new Promise((resolve) => setTimeout(resolve, 50));
    // The watch stays on the removed directory: only the poll's listing can see the new file.
    await rm(exitDir, { recursive: true });
    await mkdir(exitDir);
    await writeFile(join(exitDir, 'c5'), '3');
    const started = Date.now();
    assert.equal((await waiting).exitCode, 3);
    assert.ok(Date.now() - started < 3_000, `found after ${Date.now() - started} ms`);
  }));

test('liveness checks are spread over the poll period, each conmon asked about every 2 s', () =>
  withWatcher(async (watcher) => {
    const waiters = 80;
    const asked: { id: string; at: number }[] = [];
    const controller = new AbortController();
    const waits = Array.from({ length: waiters }, (_, i) =>
      watcher
        .wait(`w${i}`, controller.signal, () => {
          asked.push({ id: `w${i}`, at: Date.now() });
          return Promise.resolve(true);
        })
        .catch(() => undefined),
    );
    await new Promise((resolve) => setTimeout(resolve, 4_600));
    controller.abort();
    await Promise.all(waits);
    // Every conmon asked at least twice in 4.6 s (slack for a busy host), none much more often than every 2 s.
    const perId = new Map<string, number>();
    for (const { id } of asked) perId.set(id, (perId.get(id) ?? 0) + 1);
    assert.equal(perId.size, waiters);
    for (const [id, n] of perId) assert.ok(n >= 2 && n <= 3, `${id} asked ${n} times`);
    // Never all at once: the busiest 100 ms holds about one slice (80 / 8), not all 80.
    const busiest = Math.max(
      ...asked.map(({ at }) => asked.filter((a) => a.at >= at && a.at < at + 100).length),
    );
    assert.ok(busiest <= 20, `${busiest} liveness checks within 100 ms`);
  }));
