import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  chmod,
  lchown,
  link,
  lstat,
  mkdir,
  mkdtemp,
  readFile,
  readdir,
  readlink,
  rm,
  symlink as symlinkFs,
  utimes,
  writeFile,
} from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { run } from '../../util/run.js';
import { LoopFilesystem } from '../../../test/helpers/power-loss.js';
import {
  compress,
  dir,
  file,
  hardlink,
  opaque,
  sha256,
  symlink,
  tarEntries,
  whiteout,
  type Compression,
  type TarEntry,
} from '../../../test/helpers/image-builder.js';
import { ContentMismatchError, LayerRejectedError, unpackLayerStream } from './unpack.js';

const dirs: string[] = [];
after(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

async function unpack(
  entries: TarEntry[],
  compression: Compression = 'none',
  expectedDiffId?: string,
  patch?: (tar: Buffer) => void,
) {
  const work = await mkdtemp(join(tmpdir(), 'berth-unpack-'));
  dirs.push(work);
  const target = join(work, 'diff');
  const scratch = join(work, 'scratch');
  await mkdir(target);
  await mkdir(scratch);
  const raw = await tarEntries(entries);
  patch?.(raw);
  const data = await compress(raw, compression);
  const result = await unpackLayerStream(Readable.from([data]), {
    target,
    scratch,
    name: 'test-layer',
    expectedDiffId,
  });
  assert.equal(result.diffId, sha256(raw));
  return { target, scratch, work };
}

async function xattr(path: string, name: string): Promise<string | undefined> {
  const res = await run('/usr/bin/getfattr', ['-h', '--only-values', '-n', name, '--', path]);
  return res.code === 0 ? res.stdout : undefined;
}

const mtime = new Date('2020-02-02T02:02:02Z');

for (const compression of ['none', 'gzip', 'zstd'] as const) {
  test(`unpack (${compression}): files, modes, owners, mtimes, symlinks, hardlinks`, async () => {
    const { target } = await unpack(
      [
        dir('etc', { mode: 0o750, uid: 1000, gid: 1001, mtime }),
        file('etc/conf', 'hello', { mode: 0o640, uid: 7, gid: 8, mtime }),
        file('bin/tool', '#!/bin/sh\n', { mode: 0o4755, uid: 0, gid: 0 }),
        symlink('etc/link', 'conf', { uid: 5, gid: 6 }),
        hardlink('etc/hard', 'etc/conf'),
      ],
      compression,
    );
    const etc = await lstat(join(target, 'etc'));
    assert.equal(etc.mode & 0o7777, 0o750);
    assert.equal(etc.uid, 1000);
    assert.equal(etc.gid, 1001);
    assert.equal(etc.mtime.getTime(), mtime.getTime());
    const conf = await lstat(join(target, 'etc/conf'));
    assert.equal(conf.mode & 0o7777, 0o640);
    assert.deepEqual([conf.uid, conf.gid], [7, 8]);
    assert.equal(conf.mtime.getTime(), mtime.getTime());
    assert.equal(await readFile(join(target, 'etc/conf'), 'utf8'), 'hello');
    assert.equal((await lstat(join(target, 'bin/tool'))).mode & 0o7777, 0o4755);
    assert.equal(await readlink(join(target, 'etc/link')), 'conf');
    assert.equal((await lstat(join(target, 'etc/link'))).uid, 5);
    const hard = await lstat(join(target, 'etc/hard'));
    assert.equal(hard.ino, conf.ino);
    assert.equal(hard.nlink, 2);
  });
}

test('unpack: whiteouts become 0/0 character devices, opaque markers the overlay xattr', async () => {
  const { target, scratch } = await unpack([
    whiteout('etc/gone'),
    dir('var/cache'),
    opaque('var/cache'),
    file('var/cache/kept', 'x'),
    whiteout('top'),
  ]);
  for (const p of ['etc/gone', 'top']) {
    const info = await lstat(join(target, p));
    assert.ok(info.isCharacterDevice(), `${p} is a character device`);
    assert.equal(info.rdev, 0);
  }
  assert.equal(await xattr(join(target, 'var/cache'), 'trusted.overlay.opaque'), 'y');
  assert.deepEqual(await readdir(join(target, 'var/cache')), ['kept']);
  assert.deepEqual(await readdir(scratch), [], 'the whiteout template is gone');
  assert.ok(!(await readdir(join(target, 'etc'))).some((n) => n.startsWith('.wh.')));
});

test('unpack: a whiteout does not hide what the same layer put there', async () => {
  const { target } = await unpack([file('a', 'mine'), whiteout('a')]);
  assert.equal(await readFile(join(target, 'a'), 'utf8'), 'mine');
});

test('unpack: device nodes, fifos and xattrs from PAX headers', async () => {
  const { target, scratch } = await unpack([
    dir('dev'),
    { path: 'dev/null', type: 'character-device', devmajor: 1, devminor: 3, mode: 0o666 },
    { path: 'dev/loop9', type: 'block-device', devmajor: 7, devminor: 9, mode: 0o660, gid: 6 },
    { path: 'fifo', type: 'fifo', mode: 0o600 },
    file('caps', 'x', { xattrs: { 'user.note': 'hello world', 'trusted.overlay.opaque': 'y' } }),
  ]);
  const devNull = await lstat(join(target, 'dev/null'));
  assert.ok(devNull.isCharacterDevice());
  assert.equal(devNull.rdev, (1 << 8) | 3);
  assert.equal(devNull.mode & 0o777, 0o666);
  const loop = await lstat(join(target, 'dev/loop9'));
  assert.ok(loop.isBlockDevice());
  assert.equal(loop.gid, 6);
  assert.ok((await lstat(join(target, 'fifo'))).isFIFO());
  assert.equal(await xattr(join(target, 'caps'), 'user.note'), 'hello world');
  assert.equal(
    await xattr(join(target, 'caps'), 'trusted.overlay.opaque'),
    undefined,
    'tar cannot forge overlay xattrs',
  );
  assert.deepEqual(await readdir(scratch), [], 'nodes made in the scratch directory were moved into place');
});

const escapes: [string, TarEntry[]][] = [
  ['an absolute path', [file('/etc/evil', 'x')]],
  ['a .. component', [file('a/../../evil', 'x')]],
  ['a symlink with an absolute target', [symlink('l', '/tmp'), file('l/evil', 'x')]],
  ['a symlink climbing out', [dir('d'), symlink('d/up', '../..'), file('d/up/evil', 'x')]],
  [
    'a directory replaced by an escaping symlink later in the layer',
    [dir('d'), file('d/x', 'x'), symlink('d', '/etc'), file('d/evil', 'x')],
  ],
  [
    'a directory whose parent is replaced by an escaping symlink later in the layer',
    [dir('a/b'), file('a/b/x', 'x'), symlink('a', '/etc'), file('a/b/evil', 'x')],
  ],
  ['a hardlink to a path outside', [hardlink('h', '../../etc/passwd')]],
  ['a hardlink through an escaping symlink', [symlink('l', '/etc'), hardlink('h', 'l/passwd')]],
  ['a hardlink to something not in the layer', [hardlink('h', 'nope')]],
];
for (const [what, entries] of escapes) {
  test(`unpack: rejects ${what}`, async () => {
    await assert.rejects(unpack(entries), (err: unknown) => {
      assert.ok(err instanceof LayerRejectedError, String(err));
      assert.match(err.message, /test-layer/);
      return true;
    });
  });
}

test('unpack: a symlink that stays inside the layer is followed', async () => {
  const { target } = await unpack([dir('usr/lib'), symlink('lib', 'usr/lib'), file('lib/x', 'x')]);
  assert.equal(await readFile(join(target, 'usr/lib/x'), 'utf8'), 'x');
});

test('unpack: diff ID mismatch is DATA_LOSS', async () => {
  await assert.rejects(unpack([file('a', 'a')], 'gzip', `sha256:${'0'.repeat(64)}`), ContentMismatchError);
});

test('unpack: garbage is rejected, not a crash', async () => {
  const work = await mkdtemp(join(tmpdir(), 'berth-unpack-'));
  dirs.push(work);
  await mkdir(join(work, 'd'));
  await assert.rejects(
    unpackLayerStream(Readable.from([Buffer.from([0x1f, 0x8b, 1, 2, 3, 4, 5])]), {
      target: join(work, 'd'),
      scratch: work,
      name: 'garbage',
    }),
    LayerRejectedError,
  );
});

test('unpack: binary xattr values survive byte for byte', async () => {
  const binary = Buffer.from([0xff, 0x00, 0x80, 0x01, 0xc3]);
  const { target } = await unpack(
    [dir('a'), file('a/bin', 'x', { xattrs: { 'user.bin': 'PPPPP' } }), file('a/after', 'y')],
    'gzip',
    undefined,
    (tar) => {
      // tar-stream writes PAX values as text: put raw bytes in place of the placeholder.
      const at = tar.indexOf('user.bin=PPPPP');
      assert.ok(at > 0);
      binary.copy(tar, at + 'user.bin='.length);
    },
  );
  const res = await run('/usr/bin/getfattr', [
    '-h',
    '-e',
    'hex',
    '-n',
    'user.bin',
    '--',
    join(target, 'a/bin'),
  ]);
  assert.match(res.stdout, /user\.bin=0xff008001c3/);
  assert.equal(await readFile(join(target, 'a/after'), 'utf8'), 'y');
});

test('unpack: a whiteout followed by new content at the same path becomes an opaque directory', async () => {
  const { target } = await unpack([
    whiteout('etc'),
    dir('etc'),
    file('etc/new', 'n'),
    whiteout('var'),
    file('var/x', 'x'),
  ]);
  for (const d of ['etc', 'var']) {
    assert.ok((await lstat(join(target, d))).isDirectory(), d);
    assert.equal(await xattr(join(target, d), 'trusted.overlay.opaque'), 'y', d);
  }
  assert.deepEqual(await readdir(join(target, 'etc')), ['new']);
});

test('unpack: a later entry replaces what an earlier one of the same layer put at its path', async () => {
  const { target } = await unpack([
    file('a', 'first'),
    file('a', 'second'),
    file('b', 'a file'),
    symlink('b', 'a'),
    symlink('c', 'a'),
    file('c', 'now a file'),
    file('d/inner', 'in a dir'),
    file('d', 'the dir is gone'),
    file('e', 'a file'),
    dir('e'),
    file('e/child', 'under the new dir'),
    file('f/g/h', 'deep'),
    hardlink('h', 'a'),
    file('h', 'not the link'),
    dir('f', { mode: 0o711 }),
  ]);
  assert.equal(await readFile(join(target, 'a'), 'utf8'), 'second');
  assert.equal(await readlink(join(target, 'b')), 'a');
  assert.equal(await readFile(join(target, 'c'), 'utf8'), 'now a file');
  assert.equal(await readFile(join(target, 'd'), 'utf8'), 'the dir is gone');
  assert.equal(await readFile(join(target, 'e/child'), 'utf8'), 'under the new dir');
  assert.equal(
    await readFile(join(target, 'f/g/h'), 'utf8'),
    'deep',
    'a directory entry keeps what is in it',
  );
  assert.equal((await lstat(join(target, 'f'))).mode & 0o7777, 0o711);
  assert.equal(await readFile(join(target, 'h'), 'utf8'), 'not the link');
  assert.equal(
    await readFile(join(target, 'a'), 'utf8'),
    'second',
    'replacing the link left its target alone',
  );
  assert.deepEqual((await readdir(target)).sort(), ['a', 'b', 'c', 'd', 'e', 'f', 'h']);
});

test('unpack: owners and modes are exact whether the create gives them or chown/chmod must: set-group-ID dirs, grpid mounts, set-ID bits, any umask', async () => {
  const entries = [
    file('top', 'x', { mode: 0o644 }),
    dir('g', { mode: 0o2775, uid: 0, gid: 5 }),
    file('g/root-owned', 'x', { mode: 0o644 }),
    file('g/implicit/deep', 'x', { mode: 0o644 }),
    file('g/group-owned', 'x', { mode: 0o640, uid: 0, gid: 5 }),
    // Not set-group-ID: only a `grpid` mount gives its files its group.
    dir('h', { mode: 0o755, gid: 6 }),
    file('h/root-owned', 'x', { mode: 0o644 }),
    symlink('h/root-link', 'root-owned'),
    symlink('h/user-link', 'root-owned', { uid: 5, gid: 6 }),
    symlink('g/root-link', 'root-owned'),
    dir('k', { mode: 0o755, gid: 9 }),
    dir('k', { mode: 0o2755, gid: 9 }),
    file('k/root-owned', 'x', { mode: 0o644 }),
    file('plain/a', 'x', { mode: 0o644 }),
    file('plain/read-only', 'x', { mode: 0o444 }),
    file('plain/owner-read', 'x', { mode: 0o400 }),
    file('plain/exec', 'x', { mode: 0o755 }),
    file('plain/setgid', 'x', { mode: 0o2755, gid: 7 }),
    file('plain/setuid', 'x', { mode: 0o4750, uid: 3 }),
    file('plain/sticky', 'x', { mode: 0o1644 }),
    file('plain/user', 'x', { mode: 0o600, uid: 1000, gid: 1000 }),
    file('plain/group-write', 'x', { mode: 0o664 }),
  ];
  // Directories no entry names are made as mkdir makes them: 0755 less the umask, and
  // the set-group-ID bit of their parent (not on a `grpid` mount).
  const expected = (rootGid: number, umask: number, grpidMount: boolean) => {
    const implicit = ((0o755 & ~umask) | (grpidMount ? 0 : 0o2000)).toString(8);
    return [
      `top 644 0:0`,
      `g 2775 0:5`,
      `g/root-owned 644 0:0`,
      // Made by mkdir for the file below it: inherits the bit and the group.
      `g/implicit ${implicit} 0:5`,
      `g/implicit/deep 644 0:0`,
      `g/group-owned 640 0:5`,
      `h 755 0:6`,
      `h/root-owned 644 0:0`,
      `h/root-link 777 0:0`,
      `h/user-link 777 5:6`,
      `g/root-link 777 0:0`,
      `k 2755 0:9`,
      `k/root-owned 644 0:0`,
      `plain ${implicit} 0:${rootGid}`,
      `plain/a 644 0:0`,
      `plain/read-only 444 0:0`,
      `plain/owner-read 400 0:0`,
      `plain/exec 755 0:0`,
      `plain/setgid 2755 0:7`,
      `plain/setuid 4750 3:0`,
      `plain/sticky 1644 0:0`,
      `plain/user 600 1000:1000`,
      `plain/group-write 664 0:0`,
    ];
  };
  const previous = process.umask(0o022);
  // Where a file takes its directory's group even without the set-group-ID bit.
  const grpid = await LoopFilesystem.create(16, ['grpid']);
  try {
    for (const [umask, where] of [
      [0o022, tmpdir()],
      [0o077, tmpdir()],
      [0o000, tmpdir()],
      [0o022, grpid.mountPoint],
    ] as const) {
      process.umask(umask);
      const work = await mkdtemp(join(where, 'berth-unpack-'));
      dirs.push(work);
      const target = join(work, 'diff');
      const scratch = join(work, 'scratch');
      await mkdir(target);
      await mkdir(scratch);
      // The target itself carries the bit (as under a set-group-ID store dir): what is made in it takes group 4.
      await lchown(target, 0, 4);
      await chmod(target, 0o2755);
      await unpackLayerStream(Readable.from([await tarEntries(entries)]), { target, scratch, name: 'modes' });
      const seen: string[] = [];
      const want = expected(4, umask, where === grpid.mountPoint);
      for (const line of want) {
        const path = line.split(' ')[0];
        const info = await lstat(join(target, path));
        seen.push(`${path} ${(info.mode & 0o7777).toString(8)} ${info.uid}:${info.gid}`);
        if (info.isFile()) assert.equal(await readFile(join(target, path), 'utf8'), 'x', path);
      }
      assert.deepEqual(seen, want, `umask ${umask.toString(8)} in ${where}`);
    }
  } finally {
    process.umask(previous);
    await grpid.close();
  }
});

/**
 * What a tree holds, as comparable lines: types, modes, owners, times, data,
 * links, user xattrs. Names are read as bytes (some are not UTF-8).
 */
async function manifest(root: string): Promise<string[]> {
  const lines: string[] = [];
  const inodes = new Map<number, string>();
  const walk = async (rel: Buffer) => {
    const dir = rel.length > 0 ? Buffer.concat([Buffer.from(`${root}/`), rel]) : Buffer.from(root);
    for (const name of (await readdir(dir, { encoding: 'buffer' })).sort(Buffer.compare)) {
      const path = rel.length > 0 ? Buffer.concat([rel, Buffer.from('/'), name]) : name;
      const shown = JSON.stringify(path.toString('latin1'));
      const full = Buffer.concat([Buffer.from(`${root}/`), path]);
      const info = await lstat(full);
      const kind = info.isDirectory()
        ? 'dir'
        : info.isSymbolicLink()
          ? `symlink->${JSON.stringify((await readlink(full, { encoding: 'buffer' })).toString('latin1'))}`
          : info.isFile()
            ? `file:${sha256(await readFile(full))}`
            : info.isFIFO()
              ? 'fifo'
              : `dev:${info.rdev}:${info.isCharacterDevice() ? 'c' : 'b'}`;
      const first = info.nlink > 1 && !info.isDirectory() ? inodes.get(info.ino) : undefined;
      if (info.nlink > 1 && !info.isDirectory() && !first) inodes.set(info.ino, shown);
      lines.push(
        [
          shown,
          kind,
          (info.mode & 0o7777).toString(8),
          `${info.uid}:${info.gid}`,
          info.isSymbolicLink() ? '' : Math.floor(info.mtimeMs / 1000),
          first ? `same inode as ${first}` : '',
        ].join(' '),
      );
      if (info.isDirectory()) await walk(path);
    }
  };
  await walk(Buffer.alloc(0));
  // getfattr names each file with octal escapes: its blocks, sorted, compare across trees.
  const attrs = await run('/usr/bin/getfattr', ['-R', '-h', '-d', '-e', 'hex', '-m', '^user\\.', '.'], {
    cwd: root,
  });
  lines.push(
    ...attrs.stdout
      .split('\n\n')
      .filter((block) => block.trim() !== '')
      .sort(),
  );
  return lines;
}

test('unpack: the same tree as GNU tar extracts, from GNU tar archives in gnu and posix format', async () => {
  const work = await mkdtemp(join(tmpdir(), 'berth-unpack-'));
  dirs.push(work);
  const src = join(work, 'src');
  const longDir = `${'p'.repeat(90)}/${'q'.repeat(90)}`;
  await mkdir(join(src, longDir), { recursive: true });
  const put = (path: string, data: string | Buffer) => writeFile(join(src, path), data);
  await put('small', 'hello');
  await put(`${longDir}/${'n'.repeat(120)}`, 'a long path');
  await put('big', Buffer.alloc(300_000, 'b'));
  await put('empty', '');
  await put('setuid', '#!/bin/sh\n');
  await chmod(join(src, 'setuid'), 0o4755);
  await lchown(join(src, 'small'), 1000, 1001);
  await lchown(join(src, 'big'), 20_000_000, 20_000_001);
  await link(join(src, 'small'), join(src, 'hard'));
  await link(join(src, `${longDir}/${'n'.repeat(120)}`), join(src, 'hard-to-long'));
  await symlinkFs('small', join(src, 'rel-link'));
  await symlinkFs('t'.repeat(150), join(src, 'long-link'));
  await symlinkFs('/etc/passwd', join(src, 'abs-link'));
  await run('/usr/bin/mkfifo', [join(src, 'fifo')]);
  await run('/usr/bin/mknod', [join(src, 'null'), 'c', '1', '3']);
  await run('/usr/bin/setfattr', ['-n', 'user.note', '-v', 'a note', join(src, 'small')]);
  await mkdir(join(src, 'sub/deeper'), { recursive: true });
  await chmod(join(src, 'sub'), 0o750);
  await put('sub/deeper/x', 'x');
  // Names that are not UTF-8 (Latin-1 "café", a lone 0xff) and a UTF-8 one; a link to one.
  const latin1 = Buffer.from([0x63, 0x61, 0x66, 0xe9]);
  await writeFile(Buffer.concat([Buffer.from(`${src}/`), latin1]), 'latin-1 name');
  await mkdir(Buffer.concat([Buffer.from(`${src}/`), Buffer.from([0xff])]));
  await put('héllo-✓', 'utf-8 name');
  await symlinkFs(latin1, Buffer.concat([Buffer.from(`${src}/link-to-`), latin1]));
  const t = 1_600_000_000;
  for (const path of [
    'small',
    'big',
    'empty',
    'setuid',
    'fifo',
    'null',
    'sub/deeper/x',
    'sub/deeper',
    'sub',
    longDir,
  ]) {
    await utimes(join(src, path), t, t);
  }
  for (const format of ['gnu', 'posix'] as const) {
    const archive = join(work, `${format}.tar`);
    // --xattrs makes GNU tar write pax headers even in gnu format: only with posix, so that
    // the gnu archive keeps its own encodings (base-256 owners, long-name entries).
    const xattrs = format === 'posix' ? ['--xattrs'] : [];
    await run(
      '/usr/bin/tar',
      [`--format=${format}`, ...xattrs, '--numeric-owner', '-C', src, '-cf', archive, '.'],
      {
        timeoutMs: 60_000,
      },
    );
    const byTar = join(work, `${format}-by-tar`);
    await mkdir(byTar);
    const res = await run(
      '/usr/bin/tar',
      [
        '--xattrs',
        '--xattrs-include=user.*',
        '--numeric-owner',
        '--same-owner',
        '-p',
        '-C',
        byTar,
        '-xf',
        archive,
      ],
      { timeoutMs: 60_000 },
    );
    assert.equal(res.code, 0, res.stderr);
    const byBerth = join(work, `${format}-by-berth`);
    const scratch = join(work, `${format}-scratch`);
    await mkdir(byBerth);
    await mkdir(scratch);
    await unpackLayerStream(Readable.from([await compress(await readFile(archive), 'gzip')]), {
      target: byBerth,
      scratch,
      name: format,
    });
    const expected = await manifest(byTar);
    assert.ok(
      expected.some((l) => l.startsWith(JSON.stringify(latin1.toString('latin1')))),
      'the Latin-1 name is in the tree',
    );
    if (format === 'posix') {
      assert.ok(
        expected.some((l) => l.includes('user.note')),
        'GNU tar kept the xattr',
      );
    } else assert.ok(!(await readFile(archive)).includes('PaxHeader'), 'no pax headers in the gnu archive');
    assert.deepEqual(await manifest(byBerth), expected, format);
  }
});
