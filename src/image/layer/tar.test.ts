import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  chmod,
  link,
  lstat,
  mkdir,
  mkdtemp,
  readFile,
  rm,
  symlink,
  utimes,
  writeFile,
} from 'node:fs/promises';
import { lchown } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runChecked } from '../../util/run.js';
import {
  dir,
  file,
  hardlink,
  symlink as symlinkEntry,
  tarEntries,
} from '../../../test/helpers/image-builder.js';
import {
  TarFormatError,
  TarReader,
  displayName,
  type TarBody,
  type TarEntryResult,
  type TarHeader,
} from './tar.js';

const dirs: string[] = [];
after(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

interface Read {
  header: Omit<TarHeader, 'xattrs'> & { xattrs?: Record<string, string> };
  data: Buffer;
}

/** Reads `archive` in pieces of `piece` bytes; `slow` entries make the callback wait. */
async function read(
  archive: Buffer,
  piece = archive.length,
  slow: (h: TarHeader) => boolean = () => false,
): Promise<Read[]> {
  const out: Read[] = [];
  const reader = new TarReader((h): TarEntryResult => {
    const { xattrs, ...rest } = h;
    const entry: Read = {
      header: {
        ...rest,
        ...(xattrs
          ? { xattrs: Object.fromEntries([...xattrs].map(([k, v]) => [k, v.toString('hex')])) }
          : {}),
      },
      data: Buffer.alloc(0),
    };
    const chunks: Buffer[] = [];
    const body: TarBody = {
      // Copies: the reader passes views of chunks it does not keep.
      write: (d) => chunks.push(Buffer.from(d)),
      end: () => {
        entry.data = Buffer.concat(chunks);
        out.push(entry);
      },
    };
    return slow(h) ? new Promise((r) => setTimeout(() => r(body), 1)) : body;
  });
  for (let off = 0; off < archive.length; off += piece) {
    const paused = reader.write(archive.subarray(off, off + piece));
    if (paused) {
      assert.throws(() => reader.write(Buffer.alloc(1)), /paused/);
      await paused;
    }
  }
  reader.end();
  return out;
}

async function readError(archive: Buffer): Promise<string> {
  try {
    await read(archive);
  } catch (err) {
    assert.ok(err instanceof TarFormatError, String(err));
    return err.message;
  }
  assert.fail('the archive was accepted');
}

// A raw header for cases no tar writer produces on purpose.
interface Raw {
  name?: string;
  typeflag?: string;
  size?: number | Buffer;
  mode?: string;
  uid?: string | Buffer;
  linkname?: string;
  prefix?: string;
  magic?: 'ustar' | 'gnu' | 'v7';
  signedChecksum?: boolean;
  corruptChecksum?: boolean;
}

function header(raw: Raw): Buffer {
  const b = Buffer.alloc(512);
  b.write(raw.name ?? 'f', 0, 100, 'utf8');
  b.write(raw.mode ?? '0000644\0', 100, 'latin1');
  if (Buffer.isBuffer(raw.uid)) raw.uid.copy(b, 108);
  else b.write(raw.uid ?? '0000000\0', 108, 'latin1');
  b.write('0000000\0', 116, 'latin1');
  if (Buffer.isBuffer(raw.size)) raw.size.copy(b, 124);
  else b.write(`${(raw.size ?? 0).toString(8).padStart(11, '0')}\0`, 124, 'latin1');
  b.write('14000000000\0', 136, 'latin1');
  b.write(raw.typeflag ?? '0', 156, 'latin1');
  if (raw.linkname) b.write(raw.linkname, 157, 100, 'utf8');
  const magic = raw.magic ?? 'ustar';
  if (magic === 'ustar') b.write('ustar\x0000', 257, 'latin1');
  if (magic === 'gnu') b.write('ustar  \0', 257, 'latin1');
  if (raw.prefix) b.write(raw.prefix, 345, 155, 'utf8');
  b.fill(0x20, 148, 156);
  let sum = 0;
  for (const byte of b) sum += raw.signedChecksum && byte >= 128 ? byte - 256 : byte;
  if (raw.corruptChecksum) sum += 1;
  b.write(`${(sum >>> 0).toString(8).padStart(6, '0')}\0 `, 148, 'latin1');
  return b;
}

function padded(data: Buffer): Buffer {
  return Buffer.concat([data, Buffer.alloc((512 - (data.length % 512)) % 512)]);
}

function entry(raw: Raw, data = Buffer.alloc(0)): Buffer {
  return Buffer.concat([header({ ...raw, size: raw.size ?? data.length }), padded(data)]);
}

function pax(records: Record<string, string | Buffer>, typeflag = 'x'): Buffer {
  const parts: Buffer[] = [];
  for (const [key, value] of Object.entries(records)) {
    const body = Buffer.concat([Buffer.from(` ${key}=`), Buffer.from(value), Buffer.from('\n')]);
    let length = body.length + 1;
    while (String(length).length + body.length !== length) length++;
    parts.push(Buffer.concat([Buffer.from(String(length)), body]));
  }
  return entry({ name: 'PaxHeader', typeflag }, Buffer.concat(parts));
}

const END = Buffer.alloc(1024);
/** A name as the reader gives it: its UTF-8 bytes, one char each. */
const bytes = (text: string) => Buffer.from(text, 'utf8').toString('latin1');
const archive = (...parts: Buffer[]) => Buffer.concat([...parts, END]);

test('tar: any split of the input reads the same entries, also when the callback waits', async () => {
  const big = Buffer.alloc(70_000, 'b');
  const tar = await tarEntries([
    dir('d', { mode: 0o750, uid: 1234, gid: 5678 }),
    file('d/empty', ''),
    file('d/511', Buffer.alloc(511, 1)),
    file('d/512', Buffer.alloc(512, 2)),
    file('d/513', Buffer.alloc(513, 3)),
    file('d/big', big, { mode: 0o4755 }),
    file(`d/${'long'.repeat(40)}`, 'long name'),
    symlinkEntry('d/link', `target/${'x'.repeat(150)}`),
    hardlink('d/hard', 'd/513'),
    file('d/attrs', 'x', { xattrs: { 'user.a': 'one', 'user.b': 'two' } }),
    file('d/héllo-✓', 'utf-8'),
  ]);
  const whole = await read(tar);
  assert.deepEqual(
    whole.map((e) => [e.header.name, e.header.type, e.data.length]),
    [
      ['d', 'directory', 0],
      ['d/empty', 'file', 0],
      ['d/511', 'file', 511],
      ['d/512', 'file', 512],
      ['d/513', 'file', 513],
      ['d/big', 'file', 70_000],
      [`d/${'long'.repeat(40)}`, 'file', 9],
      ['d/link', 'symlink', 0],
      ['d/hard', 'link', 0],
      ['d/attrs', 'file', 1],
      [bytes('d/héllo-✓'), 'file', 5],
    ],
  );
  assert.ok(whole[5].data.equals(big));
  assert.equal(whole[0].header.mode, 0o750);
  assert.deepEqual([whole[0].header.uid, whole[0].header.gid], [1234, 5678]);
  assert.equal(whole[5].header.mode, 0o4755);
  assert.equal(whole[7].header.linkname, `target/${'x'.repeat(150)}`);
  assert.equal(whole[8].header.linkname, 'd/513');
  assert.deepEqual(whole[9].header.xattrs, {
    'user.a': Buffer.from('one').toString('hex'),
    'user.b': Buffer.from('two').toString('hex'),
  });
  for (const piece of [1, 7, 100, 511, 512, 513, 4096]) {
    assert.deepEqual(await read(tar, piece), whole, `in pieces of ${piece} bytes`);
  }
  assert.deepEqual(
    await read(tar, 333, (h) => h.type !== 'file' || h.size % 2 === 1),
    whole,
    'with a callback that waits',
  );
});

test('tar: GNU tar archives in gnu, posix, ustar and v7 format read as written', async () => {
  const work = await mkdtemp(join(tmpdir(), 'berth-tar-'));
  dirs.push(work);
  const src = join(work, 'src');
  await mkdir(join(src, 'd'), { recursive: true });
  const t = 1_600_000_000;
  const longDir = `${'p'.repeat(60)}/${'q'.repeat(60)}`;
  await mkdir(join(src, 'd', longDir), { recursive: true });
  const files: [string, Buffer][] = [
    ['d/small', Buffer.from('hello')],
    ['d/zero', Buffer.alloc(0)],
    ['d/sized', Buffer.alloc(513, 7)],
    [`d/${longDir}/deep`, Buffer.from('deep')],
  ];
  for (const [path, data] of files) await writeFile(join(src, path), data);
  await chmod(join(src, 'd/small'), 0o640);
  await lchown(join(src, 'd/small'), 1000, 1001);
  await link(join(src, 'd/small'), join(src, 'd/hard'));
  await symlink('small', join(src, 'd/link'));
  await runChecked('/usr/bin/mkfifo', [join(src, 'd/fifo')]);
  await runChecked('/usr/bin/mknod', [join(src, 'd/null'), 'c', '1', '3']);
  for (const path of ['d/small', 'd/zero', 'd/sized', `d/${longDir}/deep`, 'd/fifo', 'd/null', 'd']) {
    await utimes(join(src, path), t, t);
  }
  // Only formats that can hold them: long names and big ids.
  const extras = async () => {
    await writeFile(join(src, 'd', 'n'.repeat(120)), 'long');
    await symlink('t'.repeat(150), join(src, 'd/longlink'));
    await writeFile(join(src, 'd/bigid'), 'id');
    await lchown(join(src, 'd/bigid'), 20_000_000, 20_000_001);
    await utimes(join(src, 'd'), t, t);
  };
  const formats = ['v7', 'ustar', 'gnu', 'posix'] as const;
  for (const format of formats) {
    if (format === 'gnu') await extras();
    const out = join(work, `${format}.tar`);
    // v7 holds neither long names nor fifos and devices: only what it can.
    const what =
      format === 'v7' ? ['--no-recursion', 'd', 'd/small', 'd/zero', 'd/sized', 'd/hard', 'd/link'] : ['d'];
    await runChecked('/usr/bin/tar', [
      `--format=${format}`,
      '--numeric-owner',
      '-C',
      src,
      '-cf',
      out,
      ...what,
    ]);
    const entries = await read(await readFile(out), 4000);
    const byName = new Map(entries.map((e) => [e.header.name.replace(/\/$/, ''), e]));
    const expected = ['d', 'd/small', 'd/zero', 'd/sized', 'd/hard', 'd/link'];
    if (format !== 'v7') expected.push(`d/${longDir}/deep`, 'd/fifo', 'd/null');
    if (format === 'gnu' || format === 'posix')
      expected.push(`d/${'n'.repeat(120)}`, 'd/longlink', 'd/bigid');
    for (const name of expected) {
      const e = byName.get(name);
      assert.ok(e, `${format}: ${name} is read (read: ${[...byName.keys()].join(', ')})`);
      const info = await lstat(join(src, name));
      const h = e.header;
      assert.equal(h.mode, info.mode & 0o7777, `${format}: ${name} mode`);
      assert.deepEqual([h.uid, h.gid], [info.uid, info.gid], `${format}: ${name} owner`);
      if (name !== 'd/link' && name !== 'd/longlink') {
        assert.equal(Math.floor(h.mtime), Math.floor(info.mtimeMs / 1000), `${format}: ${name} mtime`);
      }
      if (info.isFile() && name !== 'd/hard') {
        assert.equal(h.type, 'file', `${format}: ${name} type`);
        assert.ok(e.data.equals(await readFile(join(src, name))), `${format}: ${name} data`);
      }
      if (info.isDirectory()) assert.equal(h.type, 'directory', `${format}: ${name} type`);
      if (info.isSymbolicLink()) {
        assert.equal(h.type, 'symlink');
        assert.equal(h.linkname, name === 'd/link' ? 'small' : 't'.repeat(150));
      }
      if (name === 'd/hard') assert.deepEqual([h.type, h.linkname], ['link', 'd/small']);
      if (name === 'd/null') assert.deepEqual([h.type, h.devmajor, h.devminor], ['character-device', 1, 3]);
      if (name === 'd/fifo') assert.equal(h.type, 'fifo');
    }
  }
});

test('tar: pax records set name, link, size, owner, fractional mtime and binary xattrs', async () => {
  const binary = Buffer.from([0xff, 0x00, 0x80, 0x0a, 0x3d]);
  const data = Buffer.alloc(600, 'z');
  const entries = await read(
    archive(
      pax({
        path: `${'a'.repeat(200)}/file`,
        size: '600',
        uid: '4000000000',
        gid: '12',
        mtime: '1600000000.25',
        'SCHILY.xattr.security.capability': binary,
      }),
      // The header's own size (0) is overridden by the record.
      Buffer.concat([header({ name: 'short', size: 0 }), padded(data)]),
      pax({ linkpath: 'ñ'.repeat(80) }),
      entry({ name: 'l', typeflag: '2', linkname: 'ignored' }),
    ),
  );
  assert.equal(entries.length, 2);
  const [f, l] = entries;
  assert.equal(f.header.name, `${'a'.repeat(200)}/file`);
  assert.ok(f.data.equals(data));
  assert.deepEqual([f.header.uid, f.header.gid, f.header.mtime], [4_000_000_000, 12, 1_600_000_000.25]);
  assert.deepEqual(f.header.xattrs, { 'security.capability': binary.toString('hex') });
  assert.equal(l.header.linkname, bytes('ñ'.repeat(80)));
  assert.equal(displayName(l.header.linkname), 'ñ'.repeat(80));
  assert.equal(l.header.xattrs, undefined, 'an entry header applies to one entry only');
});

test('tar: global pax records apply to every later entry, but never a name or size', async () => {
  const entries = await read(
    archive(
      pax({ uid: '77', path: 'not-for-everyone', size: '3', comment: 'from git archive' }, 'g'),
      entry({ name: 'a' }, Buffer.from('aa')),
      pax({ uid: '' }),
      entry({ name: 'b' }),
      entry({ name: 'c' }),
    ),
  );
  assert.deepEqual(
    entries.map((e) => [e.header.name, e.header.uid, e.data.toString()]),
    [
      ['a', 77, 'aa'],
      ['b', 0, ''],
      ['c', 77, ''],
    ],
  );
});

test('tar: ustar prefixes, GNU long names, base-256 numbers, old-style directories', async () => {
  const big = Buffer.alloc(12);
  big[0] = 0x80;
  big.writeUIntBE(5000, 6, 6);
  const bigUid = Buffer.alloc(8);
  bigUid[0] = 0x80;
  bigUid.writeUIntBE(9_000_000_000, 2, 6);
  const longName = Buffer.from(`${'L'.repeat(300)}\0`);
  const entries = await read(
    archive(
      entry({ name: 'leaf', prefix: 'some/prefix' }),
      entry({ name: 'gnu-ignores-prefix', prefix: 'xx', magic: 'gnu' }),
      entry({ name: 'ignored', typeflag: 'L', magic: 'gnu' }, longName),
      entry({ name: 'short', magic: 'gnu' }),
      Buffer.concat([header({ name: 'sized', size: big, uid: bigUid }), padded(Buffer.alloc(5000, 1))]),
      entry({ name: 'olddir/' }),
      entry({ name: 'v7', magic: 'v7' }, Buffer.from('v7')),
      entry({ name: 'signed-\u00ff', signedChecksum: true }),
    ),
  );
  assert.deepEqual(
    entries.map((e) => [e.header.name, e.header.type, e.data.length]),
    [
      ['some/prefix/leaf', 'file', 0],
      ['gnu-ignores-prefix', 'file', 0],
      ['L'.repeat(300), 'file', 0],
      ['sized', 'file', 5000],
      ['olddir/', 'directory', 0],
      ['v7', 'file', 2],
      [bytes('signed-\u00ff'), 'file', 0],
    ],
  );
  assert.equal(entries[3].header.uid, 9_000_000_000);
});

test('tar: two zero blocks end the archive; link, device and directory entries carry no data', async () => {
  const after = Buffer.concat([Buffer.from('trailing bytes are nobody’s business'), Buffer.alloc(900, 0xaa)]);
  const entries = await read(
    Buffer.concat([
      // A directory claiming 1024 bytes: the next header follows at once (as Go reads it).
      header({ name: 'd/', typeflag: '5', size: 1024 }),
      header({ name: 'l', typeflag: '2', linkname: 't', size: 100 }),
      entry({ name: 'f' }, Buffer.from('f')),
      END,
      after,
    ]),
  );
  assert.deepEqual(
    entries.map((e) => e.header.name),
    ['d/', 'l', 'f'],
  );
  // One zero block, then the input ends: still a whole archive.
  assert.equal((await read(Buffer.concat([entry({ name: 'f' }), Buffer.alloc(512)]))).length, 1);
  // No end blocks at all (some writers omit them).
  assert.equal((await read(entry({ name: 'f' }))).length, 1);
});

test('tar: an unsupported type is skipped with its data, and the entries after it are read', async () => {
  const entries = await read(
    archive(entry({ name: 'vol', typeflag: 'V' }, Buffer.alloc(700, 1)), entry({ name: 'after' })),
  );
  assert.deepEqual(
    entries.map((e) => [e.header.name, e.header.type, e.header.typeflag, e.data.length]),
    [
      ['vol', 'unsupported', 'V', 700],
      ['after', 'file', '0', 0],
    ],
  );
});

test('tar: malformed archives are refused with what is wrong', async () => {
  const cases: [string, Buffer, RegExp][] = [
    ['a wrong checksum', archive(entry({ name: 'f', corruptChecksum: true })), /checksum is wrong/],
    ['not a tar at all', Buffer.alloc(2048, 'x'), /not an octal number|checksum/],
    [
      'a zero block then a header',
      Buffer.concat([Buffer.alloc(512), entry({ name: 'f' })]),
      /zero block is followed/,
    ],
    [
      'garbage in a size',
      archive(header({ name: 'f', size: Buffer.from('0000x000000\0') })),
      /size field is not an octal/,
    ],
    ['a negative size', archive(header({ name: 'f', size: Buffer.alloc(12, 0xff) })), /negative size/],
    [
      'a pax record of the wrong length',
      archive(entry({ name: 'p', typeflag: 'x' }, Buffer.from('99 path=x\n')), entry({ name: 'f' })),
      /malformed record/,
    ],
    [
      'a pax record without =',
      archive(entry({ name: 'p', typeflag: 'x' }, Buffer.from('8 pathx\n')), entry({ name: 'f' })),
      /without '='/,
    ],
    ['a pax size that is not a number', archive(pax({ size: '12a' }), entry({ name: 'f' })), /invalid size/],
    [
      'a pax mtime that is not a number',
      archive(pax({ mtime: '1e9' }), entry({ name: 'f' })),
      /invalid mtime/,
    ],
    [
      'an extended header over 1 MiB',
      archive(header({ name: 'p', typeflag: 'x', size: 1024 * 1024 + 1 })),
      /over the 1048576 allowed/,
    ],
    ['an old GNU sparse file', archive(entry({ name: 's', typeflag: 'S' })), /"s" is a GNU sparse file/],
    [
      'a pax GNU sparse file',
      archive(pax({ 'GNU.sparse.major': '1', 'GNU.sparse.minor': '0' }), entry({ name: 's' })),
      /sparse/,
    ],
  ];
  for (const [what, tar, message] of cases) {
    assert.match(await readError(tar), message, what);
  }
});

test('tar: input that ends inside a header or an entry is refused; between entries it is whole', async () => {
  const first = entry({ name: 'first' }, Buffer.alloc(700, 1));
  const second = entry({ name: 'second' }, Buffer.alloc(10, 2));
  const whole = Buffer.concat([first, second]);
  const boundaries = new Set([0, first.length, whole.length]);
  for (let cut = 0; cut <= whole.length; cut += cut < 1100 ? 1 : 97) {
    const part = whole.subarray(0, cut);
    if (boundaries.has(cut)) {
      await read(part);
      continue;
    }
    const message = await readError(part);
    const inFirst = cut >= 512 && cut < first.length;
    assert.match(
      message,
      inFirst
        ? /ends in the middle of entry "first"/
        : cut > first.length + 512
          ? /entry "second"/
          : /a header/,
      `cut at ${cut}`,
    );
  }
});

test('tar: damaged archives are read or refused as tar errors, never anything else', async () => {
  const tar = await tarEntries([
    dir('d'),
    file('d/a', Buffer.alloc(1500, 'a')),
    file(`d/${'long'.repeat(40)}`, 'x', { xattrs: { 'user.k': 'v' } }),
    symlinkEntry('d/l', 'a'),
    hardlink('d/h', 'd/a'),
  ]);
  // A fixed generator: the same damage in every run.
  let seed = 42;
  const next = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31);
  let refused = 0;
  for (let round = 0; round < 2000; round++) {
    const damaged = Buffer.from(tar);
    for (let flips = 1 + (next() % 3); flips > 0; flips--) damaged[next() % damaged.length] = next() % 256;
    let delivered = 0;
    const reader = new TarReader(() => ({ write: (d) => (delivered += d.length), end: () => undefined }));
    try {
      for (let off = 0; off < damaged.length; off += 1000)
        assert.equal(reader.write(damaged.subarray(off, off + 1000)), undefined);
      reader.end();
    } catch (err) {
      assert.ok(err instanceof TarFormatError, `round ${round}: ${String(err)}`);
      refused++;
    }
    assert.ok(delivered <= damaged.length, `round ${round}: no more data than there is`);
  }
  assert.ok(refused > 500, `most damage is caught by the checksums (${refused} of 2000 refused)`);
});

test('tar: names and link targets are the bytes the archive holds, UTF-8 or not', async () => {
  const latin1Name = Buffer.from([0x63, 0x61, 0x66, 0xe9]); // "café" in Latin-1
  // header() writes names as UTF-8: put the raw bytes in, then mend the checksum.
  const named = entry({ name: 'x' });
  named.fill(0, 0, 100);
  latin1Name.copy(named, 0);
  named.fill(0x20, 148, 156);
  let sum = 0;
  for (const byte of named.subarray(0, 512)) sum += byte;
  named.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'latin1');
  const entries = await read(
    archive(
      named,
      pax({ path: Buffer.from([0x64, 0x2f, 0xff, 0xfe]), linkpath: latin1Name }),
      entry({ name: 'l', typeflag: '2' }),
    ),
  );
  assert.deepEqual(
    entries.map((e) => [Buffer.from(e.header.name, 'latin1'), Buffer.from(e.header.linkname, 'latin1')]),
    [
      [latin1Name, Buffer.alloc(0)],
      [Buffer.from([0x64, 0x2f, 0xff, 0xfe]), latin1Name],
    ],
  );
  assert.equal(displayName(entries[0].header.name), 'caf\ufffd');
});
