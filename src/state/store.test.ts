import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RecordStore } from './store.js';
import { NameRegistry } from './names.js';
import { matchPrefix, newId, resolvePrefix } from './ids.js';
import { KeyedMutex } from './lock.js';
import { BerthError } from '../errors.js';
import { status } from '@grpc/grpc-js';

interface Thing {
  id: string;
  n: number;
}

function parseThing(value: unknown): Thing {
  const v = value as Thing;
  if (typeof v?.id !== 'string' || typeof v.n !== 'number') throw new Error('not a thing');
  return v;
}

describe('RecordStore', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'berth-store-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('persists puts and deletes across reopen', async () => {
    const path = join(dir, 'a');
    const store = await RecordStore.open(path, 'thing', parseThing);
    await store.put({ id: 'one', n: 1 });
    await store.put({ id: 'two', n: 2 });
    await store.put({ id: 'one', n: 11 });
    await store.delete('two');
    await store.delete('never-there');
    const again = await RecordStore.open(path, 'thing', parseThing);
    assert.deepEqual(again.all(), [{ id: 'one', n: 11 }]);
    assert.deepEqual((await readdir(path)).sort(), ['one.json']);
  });

  it('a derivable put replaces the record whole, in the same form, without temp files left', async () => {
    const path = join(dir, 'derivable');
    const store = await RecordStore.open(path, 'thing', parseThing);
    await store.put({ id: 'one', n: 1 });
    const durable = await readFile(join(path, 'one.json'), 'utf8');
    await store.put({ id: 'one', n: 2 }, { derivable: true });
    assert.equal(await readFile(join(path, 'one.json'), 'utf8'), durable.replace('"n": 1', '"n": 2'));
    assert.deepEqual((await RecordStore.open(path, 'thing', parseThing)).all(), [{ id: 'one', n: 2 }]);
    assert.deepEqual(await readdir(path), ['one.json']);
  });

  it('sets corrupt and mismatched records aside and drops stale temp files', async () => {
    const path = join(dir, 'b');
    const store = await RecordStore.open(path, 'thing', parseThing);
    await store.put({ id: 'good', n: 1 });
    await writeFile(join(path, 'torn.json'), '{"id": "torn", "n"');
    await writeFile(join(path, 'other.json'), '{"id": "elsewhere", "n": 3}');
    await writeFile(join(path, '.good.json.abc.tmp'), 'half');
    const again = await RecordStore.open(path, 'thing', parseThing);
    assert.deepEqual(again.ids(), ['good']);
    assert.deepEqual((await readdir(path)).sort(), ['good.json', 'other.json.corrupt', 'torn.json.corrupt']);
  });

  it('refuses ids that could leave the directory', async () => {
    const store = await RecordStore.open(join(dir, 'c'), 'thing', parseThing);
    await assert.rejects(store.put({ id: '../escape', n: 1 }), /thing id "\.\.\/escape" is not valid/);
    assert.equal(store.size, 0);
  });
});

describe('NameRegistry', () => {
  it('answers a duplicate with an error naming the holder', () => {
    const names = new NameRegistry();
    names.reserve('k8s_POD_a_ns_uid_0', 'id1');
    names.reserve('k8s_POD_a_ns_uid_0', 'id1');
    assert.throws(
      () => names.reserve('k8s_POD_a_ns_uid_0', 'id2', 'pod sandbox name'),
      (err: unknown) =>
        err instanceof BerthError &&
        err.code === status.ALREADY_EXISTS &&
        /pod sandbox name "k8s_POD_a_ns_uid_0" is already reserved for id1/.test(err.message),
    );
    names.release('k8s_POD_a_ns_uid_0', 'id2');
    assert.equal(names.holder('k8s_POD_a_ns_uid_0'), 'id1');
    names.release('k8s_POD_a_ns_uid_0', 'id1');
    names.reserve('k8s_POD_a_ns_uid_0', 'id2');
    assert.equal(names.holder('k8s_POD_a_ns_uid_0'), 'id2');
  });
});

describe('ids', () => {
  it('are 64 hex digits and resolve by unique prefix', () => {
    const a = newId();
    assert.match(a, /^[0-9a-f]{64}$/);
    const ids = ['abc123', 'abd456', 'abc'];
    assert.equal(matchPrefix(ids, 'abc', 'pod sandbox'), 'abc');
    assert.equal(matchPrefix(ids, 'abd', 'pod sandbox'), 'abd456');
    assert.equal(matchPrefix(ids, 'zzz', 'pod sandbox'), undefined);
    assert.throws(() => matchPrefix(ids, 'ab', 'pod sandbox'), /prefix "ab" is ambiguous: it matches 3/);
    assert.throws(
      () => resolvePrefix(ids, 'zzz', 'container'),
      (err: unknown) =>
        err instanceof BerthError &&
        err.code === status.NOT_FOUND &&
        /container "zzz" not found/.test(err.message),
    );
  });
});

describe('KeyedMutex', () => {
  it('serialises one key and lets others run', async () => {
    const mutex = new KeyedMutex();
    const order: string[] = [];
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const first = mutex.with('a', async () => {
      order.push('a1 start');
      await gate;
      order.push('a1 end');
    });
    const second = mutex.with('a', () => {
      order.push('a2');
      return Promise.resolve();
    });
    await mutex.with('b', () => {
      order.push('b');
      return Promise.resolve();
    });
    release();
    await Promise.all([first, second]);
    assert.deepEqual(order, ['a1 start', 'b', 'a1 end', 'a2']);
    assert.equal(mutex.busy('a'), false);
  });
});
