import { it } from 'node:test';
import assert from 'node:assert/strict';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { Tripwire, raced } from './tripwire.js';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

async function* chunks(n: number, refs: WeakRef<Buffer>[]): AsyncGenerator<Buffer> {
  for (let i = 0; i < n; i++) {
    const chunk = Buffer.alloc(1024, i);
    refs.push(new WeakRef(chunk));
    await new Promise((r) => setImmediate(r));
    yield chunk;
  }
}

it('items already consumed can be collected while the tripwire is still set', async () => {
  // A failure that never comes (the common case: the whole layer unpacks fine).
  const tripwire = new Tripwire(new Promise<never>(() => undefined));
  const refs: WeakRef<Buffer>[] = [];
  let seen = 0;
  for await (const chunk of raced(chunks(200, refs), tripwire)) {
    seen += chunk.length;
  }
  assert.equal(seen, 200 * 1024);
  // Let pending reactions run, then collect.
  await new Promise((r) => setImmediate(r));
  gc();
  await new Promise((r) => setImmediate(r));
  gc();
  const alive = refs.filter((ref) => ref.deref() !== undefined).length;
  // Promise.race against the pending promise kept every one of them.
  assert.ok(alive <= 2, `${alive} of 200 consumed chunks are still reachable`);
});

it('a failure ends the wait in progress and every later one', async () => {
  let fail!: (err: Error) => void;
  const tripwire = new Tripwire(new Promise<never>((_, reject) => (fail = reject)));
  const never = new Promise<number>(() => undefined);
  const waiting = tripwire.wait(never);
  fail(new Error('the feed broke'));
  await assert.rejects(waiting, /the feed broke/);
  await assert.rejects(tripwire.wait(Promise.resolve(1)), /the feed broke/);
});

it('a wait settles with its own result or error while nothing failed', async () => {
  const tripwire = new Tripwire(new Promise<never>(() => undefined));
  assert.equal(await tripwire.wait(Promise.resolve(7)), 7);
  await assert.rejects(tripwire.wait(Promise.reject(new Error('own error'))), /own error/);
});

it('raced stops with the failure even while the source is stuck', async () => {
  let fail!: (err: Error) => void;
  const tripwire = new Tripwire(new Promise<never>((_, reject) => (fail = reject)));
  let closed = false;
  const stuck: AsyncIterable<number> = {
    [Symbol.asyncIterator]: () => ({
      next: () => new Promise<IteratorResult<number>>(() => undefined),
      return: () => {
        closed = true;
        return Promise.resolve({ done: true, value: undefined });
      },
    }),
  };
  setImmediate(() => fail(new Error('source gone')));
  await assert.rejects(async () => {
    for await (const _ of raced(stuck, tripwire)) assert.fail('nothing to yield');
  }, /source gone/);
  assert.equal(closed, true);
});
