import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, mkdir, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { SupplementalGroupsPolicy } from '../../generated/api.js';
import { InvalidArgumentError } from '../../errors.js';
import { parseGroup, parsePasswd, readRootfsFile, resolveUser, type UserRequest } from './user.js';

let dir: string;
let rootfs: string;

const PASSWD = [
  'root:x:0:0:root:/root:/bin/sh',
  'app:x:1000:1000:app:/home/app:/bin/sh',
  '# comment',
  'broken:line',
  'svc:x:2000:2500::/srv:/bin/false',
  '',
].join('\n');
const GROUP = [
  'root:x:0:',
  'app:x:1000:',
  'video:x:44:app,other',
  'audio:x:29:svc',
  'staff:x:50:app',
  'grp:x:2500:',
  '',
].join('\n');

function req(partial: Partial<UserRequest> = {}): UserRequest {
  return { supplementalGroups: [], policy: SupplementalGroupsPolicy.Merge, ...partial };
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'berth-user-'));
  rootfs = join(dir, 'rootfs');
  await mkdir(join(rootfs, 'etc'), { recursive: true });
  await writeFile(join(rootfs, 'etc/passwd'), PASSWD);
  await writeFile(join(rootfs, 'etc/group'), GROUP);
});

after(async () => {
  await rm(dir, { recursive: true, force: true });
});

test('passwd and group parsing skips comments and broken lines', () => {
  assert.deepEqual(
    parsePasswd(PASSWD).map((e) => e.name),
    ['root', 'app', 'svc'],
  );
  assert.deepEqual(parseGroup(GROUP).find((g) => g.name === 'video')?.members, ['app', 'other']);
});

test('no user anywhere is root with its groups', async () => {
  const u = await resolveUser(rootfs, req(), 'c');
  assert.deepEqual(u, { uid: 0, gid: 0, additionalGids: [0], home: '/root' });
});

test('run_as_user: primary gid from /etc/passwd, supplementary groups merged from /etc/group', async () => {
  const u = await resolveUser(rootfs, req({ runAsUser: 1000, supplementalGroups: [5000] }), 'c');
  assert.deepEqual(u, { uid: 1000, gid: 1000, additionalGids: [44, 50, 1000, 5000], home: '/home/app' });
});

test('supplemental groups policy Strict ignores /etc/group', async () => {
  const u = await resolveUser(
    rootfs,
    req({ runAsUser: 1000, supplementalGroups: [5000], policy: SupplementalGroupsPolicy.Strict }),
    'c',
  );
  assert.deepEqual(u.additionalGids, [1000, 5000]);
});

test('a uid missing from /etc/passwd runs with gid 0', async () => {
  const u = await resolveUser(rootfs, req({ runAsUser: 4242 }), 'c');
  assert.deepEqual(u, { uid: 4242, gid: 0, additionalGids: [0], home: '/' });
});

test('run_as_group overrides the primary group; alone it is an error', async () => {
  const u = await resolveUser(rootfs, req({ runAsUser: 1000, runAsGroup: 7 }), 'c');
  assert.equal(u.gid, 7);
  assert.deepEqual(u.additionalGids, [7, 44, 50]);
  await assert.rejects(resolveUser(rootfs, req({ runAsGroup: 7 }), 'container "x"'), (err: Error) => {
    assert.ok(err instanceof InvalidArgumentError);
    assert.match(err.message, /container "x": run_as_group 7 is set without run_as_user/);
    return true;
  });
});

test('run_as_username resolves in the image and beats run_as_user', async () => {
  const u = await resolveUser(rootfs, req({ runAsUsername: 'svc', runAsUser: 1000 }), 'c');
  assert.deepEqual(u, { uid: 2000, gid: 2500, additionalGids: [29, 2500], home: '/srv' });
  await assert.rejects(
    resolveUser(rootfs, req({ runAsUsername: 'ghost' }), 'c'),
    /user "ghost" is not in the image's \/etc\/passwd/,
  );
});

test('image USER forms: name, uid, uid:gid, name:group, uid:group', async () => {
  assert.deepEqual(await resolveUser(rootfs, req({ imageUser: 'app' }), 'c'), {
    uid: 1000,
    gid: 1000,
    additionalGids: [44, 50, 1000],
    home: '/home/app',
  });
  assert.equal((await resolveUser(rootfs, req({ imageUser: '1000' }), 'c')).gid, 1000);
  const numeric = await resolveUser(rootfs, req({ imageUser: '1000:44' }), 'c');
  assert.deepEqual([numeric.uid, numeric.gid], [1000, 44]);
  const named = await resolveUser(rootfs, req({ imageUser: 'app:audio' }), 'c');
  assert.deepEqual([named.uid, named.gid], [1000, 29]);
  const mixed = await resolveUser(rootfs, req({ imageUser: '3000:staff' }), 'c');
  assert.deepEqual([mixed.uid, mixed.gid], [3000, 50]);
  await assert.rejects(
    resolveUser(rootfs, req({ imageUser: 'app:nogroup' }), 'c'),
    /group "nogroup" is not in the image's \/etc\/group/,
  );
  await assert.rejects(resolveUser(rootfs, req({ imageUser: 'a:b:c' }), 'c'), /invalid user "a:b:c"/);
  await assert.rejects(resolveUser(rootfs, req({ imageUser: '99999999999' }), 'c'), /out of range/);
  // run_as_user wins over the image's USER, group part included.
  const over = await resolveUser(rootfs, req({ imageUser: 'app:audio', runAsUser: 2000 }), 'c');
  assert.deepEqual([over.uid, over.gid], [2000, 2500]);
});

test('a symlinked /etc/passwd cannot reach files outside the rootfs', async () => {
  const evil = join(dir, 'evil');
  await mkdir(join(evil, 'etc'), { recursive: true });
  // The host-side file the links aim at: a user "escaped" that must never be seen.
  await writeFile(join(dir, 'outside-passwd'), 'escaped:x:0:0::/:/bin/sh\n');
  await symlink('../../../../../../../../outside-passwd', join(evil, 'etc/passwd'));
  await symlink(join(dir, 'outside-passwd'), join(evil, 'etc/group'));
  await assert.rejects(
    resolveUser(evil, req({ runAsUsername: 'escaped' }), 'c'),
    /not in the image's \/etc\/passwd/,
  );
  assert.equal(await readRootfsFile(evil, '/etc/passwd'), undefined);
  assert.equal(await readRootfsFile(evil, '/etc/group'), undefined);
  // A link that stays inside resolves inside.
  const inside = join(dir, 'inside');
  await mkdir(join(inside, 'etc'), { recursive: true });
  await mkdir(join(inside, 'data'));
  await writeFile(join(inside, 'data/passwd'), 'web:x:33:33::/var/www:/bin/sh\n');
  await symlink('/data/passwd', join(inside, 'etc/passwd'));
  assert.equal((await resolveUser(inside, req({ runAsUsername: 'web' }), 'c')).uid, 33);
  // /etc itself a link pointing out of the root: resolved inside the root too.
  const linkedEtc = join(dir, 'linked-etc');
  await mkdir(linkedEtc);
  await symlink(join(dir, 'evil', '..'), join(linkedEtc, 'etc'));
  assert.equal(await readRootfsFile(linkedEtc, '/etc/outside-passwd'), undefined);
});

test('a FIFO as /etc/passwd is refused instead of blocking', async () => {
  const fifoRoot = join(dir, 'fifo');
  await mkdir(join(fifoRoot, 'etc'), { recursive: true });
  const made = spawnSync('mkfifo', [join(fifoRoot, 'etc/passwd')]);
  assert.equal(made.status, 0);
  await assert.rejects(resolveUser(fifoRoot, req({ runAsUsername: 'x' }), 'c'), /not a regular file/);
});

test('no /etc/passwd: numeric users work, names do not', async () => {
  const bare = join(dir, 'bare');
  await mkdir(bare);
  assert.deepEqual(await resolveUser(bare, req({ runAsUser: 5 }), 'c'), {
    uid: 5,
    gid: 0,
    additionalGids: [0],
    home: '/',
  });
  await assert.rejects(resolveUser(bare, req({ imageUser: 'app' }), 'c'), InvalidArgumentError);
});
