import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runChecked } from '../../util/run.js';
import { createNetns, isNetns, listNetns, netnsPath, removeNetns } from './netns.js';

let runRoot: string;
before(async () => {
  runRoot = await mkdtemp(join(tmpdir(), 'berth-netns-'));
});
after(async () => {
  for (const path of await listNetns(runRoot)) await removeNetns(path);
  await rm(runRoot, { recursive: true, force: true });
});

test('createNetns makes a persistent namespace distinct from the host one; removeNetns is idempotent', async () => {
  const path = await createNetns(runRoot, 'pod-a');
  assert.equal(path, join(runRoot, 'netns', 'pod-a'));
  assert.equal(await isNetns(path), true);
  // It is a new namespace: only lo, which is down.
  const { stdout } = await runChecked('nsenter', [`--net=${path}`, 'ip', '-o', 'link', 'show']);
  assert.match(stdout, /^1: lo: /);
  assert.equal(stdout.trim().split('\n').length, 1);
  const hostNs = (await stat('/proc/self/ns/net')).ino;
  assert.notEqual((await stat(path)).ino, hostNs);
  await assert.rejects(createNetns(runRoot, 'pod-a'), /already exists/);
  assert.deepEqual(await listNetns(runRoot), [path]);
  await removeNetns(path);
  assert.equal(await isNetns(path), false);
  await assert.rejects(stat(path), /ENOENT/);
  assert.doesNotMatch(await readFile('/proc/self/mountinfo', 'utf8'), /netns\/pod-a/);
  await removeNetns(path);
});

test('removeNetns removes a plain file left by a crash between unmount and unlink', async () => {
  const path = join(runRoot, 'netns', 'crashed');
  await writeFile(path, '');
  assert.equal(await isNetns(path), false);
  await removeNetns(path);
  await assert.rejects(stat(path), /ENOENT/);
});

test('pod ids that are not plain names are refused', () => {
  for (const id of ['../x', 'a/b', '', '.hidden'])
    assert.throws(() => netnsPath(runRoot, id), /not a valid netns name/);
});
