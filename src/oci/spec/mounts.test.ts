import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, mkdir, rm, stat, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Mount, MountPropagation } from '../../generated/api.js';
import { FailedPreconditionError, InvalidArgumentError } from '../../errors.js';
import { runChecked, run } from '../../util/run.js';
import {
  checkAbsolutePath,
  criBindMounts,
  mergeMounts,
  mountOf,
  parseMountInfo,
  propagationOf,
} from './mounts.js';

let dir: string;
let mounted = false;
const yes = () => Promise.resolve(true);
const no = () => Promise.resolve(false);

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'berth-mounts-'));
});

after(async () => {
  if (mounted) await run('umount', ['-l', join(dir, 'mnt')]);
  await rm(dir, { recursive: true, force: true });
});

function m(partial: Partial<Mount>): Mount {
  return Mount.fromPartial({ propagation: MountPropagation.PROPAGATION_PRIVATE, ...partial });
}

test('container and host paths must be absolute and free of ..', async () => {
  assert.equal(checkAbsolutePath('/a/b/', 'p'), '/a/b');
  assert.equal(checkAbsolutePath('/', 'p'), '/');
  for (const bad of ['relative/path', '/a/../b', '..', '', '/a\0b']) {
    assert.throws(() => checkAbsolutePath(bad, 'mount container_path'), InvalidArgumentError, bad);
  }
  await assert.rejects(
    criBindMounts([m({ containerPath: 'data', hostPath: dir })], {
      what: 'container "c"',
      recursiveReadOnly: yes,
    }),
    /container "c": mount container_path "data" is not an absolute path/,
  );
  await assert.rejects(
    criBindMounts([m({ containerPath: '/data', hostPath: `${dir}/../etc` })], {
      what: 'c',
      recursiveReadOnly: yes,
    }),
    /contains a '\.\.' component/,
  );
  await assert.rejects(
    criBindMounts([m({ containerPath: '/data', hostPath: 'tmp' })], { what: 'c', recursiveReadOnly: yes }),
    /host_path for \/data "tmp" is not an absolute path/,
  );
});

test('bind options: rprivate, ro/rw, missing host dir created, symlinks resolved', async () => {
  await mkdir(join(dir, 'real'));
  await symlink(join(dir, 'real'), join(dir, 'link'));
  const { mounts, rootfsPropagation } = await criBindMounts(
    [
      m({ containerPath: '/ro', hostPath: join(dir, 'link'), readonly: true }),
      m({ containerPath: '/new/', hostPath: join(dir, 'created/deep') }),
    ],
    { what: 'c', recursiveReadOnly: no },
  );
  assert.equal(rootfsPropagation, undefined);
  assert.deepEqual(mounts[0], {
    destination: '/ro',
    type: 'bind',
    source: join(dir, 'real'),
    options: ['rbind', 'rprivate', 'ro'],
  });
  assert.deepEqual(mounts[1], {
    destination: '/new',
    type: 'bind',
    source: join(dir, 'created/deep'),
    options: ['rbind', 'rprivate', 'rw'],
  });
  assert.ok((await stat(join(dir, 'created/deep'))).isDirectory());
  await assert.rejects(
    criBindMounts([m({ containerPath: '/x', hostPath: dir }), m({ containerPath: '/x/', hostPath: dir })], {
      what: 'c',
      recursiveReadOnly: yes,
    }),
    /two mounts at \/x/,
  );
});

test('recursive read-only: rro when the runtime supports it, clear errors otherwise', async () => {
  const rro = await criBindMounts(
    [m({ containerPath: '/r', hostPath: dir, readonly: true, recursiveReadOnly: true })],
    {
      what: 'c',
      recursiveReadOnly: yes,
    },
  );
  assert.deepEqual(rro.mounts[0].options, ['rbind', 'rprivate', 'rro']);
  await assert.rejects(
    criBindMounts([m({ containerPath: '/r', hostPath: dir, readonly: true, recursiveReadOnly: true })], {
      what: 'c',
      recursiveReadOnly: no,
    }),
    (err: Error) =>
      err instanceof FailedPreconditionError && /not supported by the runtime handler/.test(err.message),
  );
  await assert.rejects(
    criBindMounts([m({ containerPath: '/r', hostPath: dir, readonly: false, recursiveReadOnly: true })], {
      what: 'c',
      recursiveReadOnly: yes,
    }),
    /recursive read-only but not read-only/,
  );
});

test('mountinfo parsing and propagation of the mount a path is on', () => {
  const table = parseMountInfo(
    [
      '22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/sda rw',
      '30 22 0:30 / /var/lib rw master:7 - tmpfs tmpfs rw',
      '31 22 0:31 / /data\\040dir rw - tmpfs tmpfs rw',
      '32 30 0:32 / /var/lib/kubelet rw shared:9 master:7 - tmpfs tmpfs rw',
    ].join('\n'),
  );
  assert.equal(table[2].mountPoint, '/data dir');
  assert.equal(propagationOf(mountOf('/etc', table)!), 'shared');
  assert.equal(propagationOf(mountOf('/var/lib/x', table)!), 'slave');
  assert.equal(propagationOf(mountOf('/data dir/a', table)!), 'private');
  assert.equal(propagationOf(mountOf('/var/lib/kubelet/pods', table)!), 'shared');
  assert.equal(mountOf('/var/library', table)!.mountPoint, '/');
});

test('propagation against the real mount table: private refused, shared accepted', async () => {
  const mnt = join(dir, 'mnt');
  await mkdir(mnt);
  await runChecked('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'berth-test', mnt]);
  mounted = true;
  await runChecked('mount', ['--make-private', mnt]);
  for (const propagation of [
    MountPropagation.PROPAGATION_HOST_TO_CONTAINER,
    MountPropagation.PROPAGATION_BIDIRECTIONAL,
  ]) {
    await assert.rejects(
      criBindMounts([m({ containerPath: '/p', hostPath: mnt, propagation })], {
        what: 'c',
        recursiveReadOnly: yes,
      }),
      (err: Error) => err instanceof FailedPreconditionError && err.message.includes(mnt),
    );
  }
  await runChecked('mount', ['--make-shared', mnt]);
  const slave = await criBindMounts(
    [m({ containerPath: '/p', hostPath: mnt, propagation: MountPropagation.PROPAGATION_HOST_TO_CONTAINER })],
    {
      what: 'c',
      recursiveReadOnly: yes,
    },
  );
  assert.deepEqual(slave.mounts[0].options, ['rbind', 'rslave', 'rw']);
  assert.equal(slave.rootfsPropagation, 'rslave');
  const both = await criBindMounts(
    [
      m({ containerPath: '/a', hostPath: mnt, propagation: MountPropagation.PROPAGATION_HOST_TO_CONTAINER }),
      m({ containerPath: '/b', hostPath: mnt, propagation: MountPropagation.PROPAGATION_BIDIRECTIONAL }),
    ],
    { what: 'c', recursiveReadOnly: yes },
  );
  assert.deepEqual(both.mounts[1].options, ['rbind', 'rshared', 'rw']);
  assert.equal(both.rootfsPropagation, 'rshared');
});

test('container mounts replace standard ones at the same place; /dev replaces all below it', () => {
  const standard = [
    { destination: '/proc', type: 'proc', source: 'proc' },
    { destination: '/dev', type: 'tmpfs', source: 'tmpfs' },
    { destination: '/dev/shm', type: 'bind', source: '/run/shm' },
    { destination: '/etc/hosts', type: 'bind', source: '/pod/hosts' },
  ];
  const merged = mergeMounts(standard, [
    { destination: '/etc/hosts', type: 'bind', source: '/mine' },
    { destination: '/a/b/c', type: 'bind', source: '/x' },
    { destination: '/a', type: 'bind', source: '/y' },
  ]);
  assert.deepEqual(
    merged.map((x) => `${x.destination}=${x.source}`),
    ['/proc=proc', '/dev=tmpfs', '/a=/y', '/dev/shm=/run/shm', '/etc/hosts=/mine', '/a/b/c=/x'],
  );
  const noDev = mergeMounts(standard, [{ destination: '/dev', type: 'bind', source: '/dev' }]);
  assert.deepEqual(
    noDev.map((x) => x.destination),
    ['/proc', '/dev', '/etc/hosts'],
  );
});
