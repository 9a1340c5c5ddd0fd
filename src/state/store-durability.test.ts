/**
 * RecordStore after a power loss (test/helpers/power-loss.ts: a loop-mounted
 * ext4 and a copy of its device taken while mounted).
 */
import { after, before, it } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { LoopFilesystem } from '../../test/helpers/power-loss.js';
import { RecordStore } from './store.js';

interface Thing {
  id: string;
  n: number;
  padding: string;
}

function parseThing(value: unknown): Thing {
  const v = value as Thing;
  if (typeof v?.id !== 'string' || typeof v.n !== 'number') throw new Error('not a thing');
  return v;
}

let disk: LoopFilesystem;
before(async () => {
  disk = await LoopFilesystem.create();
});
after(async () => {
  await disk?.close();
});

it('a durable put is there after a power loss; a derivable one after it may be lost, never tears the record', async () => {
  const dir = join(disk.mountPoint, 'records');
  const store = await RecordStore.open<Thing>(dir, 'thing', parseThing);
  const padding = 'x'.repeat(6000); // beyond an inline-data inode
  await store.put({ id: 'kept', n: 1, padding });
  await store.put({ id: 'kept', n: 2, padding }, { derivable: true });
  // Any later durable write commits the filesystem's journal, the derivable rename with it.
  await store.put({ id: 'other', n: 3, padding });

  const crashed = await disk.afterPowerLoss();
  const reopened = await RecordStore.open<Thing>(join(crashed, 'records'), 'thing', parseThing);
  const thing = reopened.get('kept');
  assert.ok(thing, 'the record is gone after the power loss');
  assert.ok(thing.n === 1 || thing.n === 2, `n = ${thing.n}`);
  assert.equal(thing.padding, padding);
});
