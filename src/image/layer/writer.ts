/**
 * Streams a layer tar (gzip, zstd or plain) into a directory laid out as an
 * overlayfs lower layer: OCI whiteouts become 0/0 character devices, opaque
 * markers the `trusted.overlay.opaque=y` xattr; modes, owners, mtimes,
 * symlinks, hardlinks, device nodes and PAX `SCHILY.xattr.*` are kept.
 *
 * Any entry that would land outside the target (absolute path, `..`, or a
 * parent that is a symlink leading out) rejects the whole layer; the caller
 * unpacks into a temp dir and deletes it on failure, so nothing is left.
 */
import {
  closeSync,
  constants,
  fchmodSync,
  fchownSync,
  futimesSync,
  linkSync as link,
  lchownSync as lchown,
  lstatSync as lstat,
  lutimesSync as lutimes,
  mkdirSync as mkdir,
  openSync,
  readlinkSync as readlink,
  rmSync as rm,
  symlinkSync as symlink,
  unlinkSync as unlink,
  chmodSync as chmod,
  writeSync,
} from 'node:fs';
import { posix } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import tar from 'tar-stream';
import { LayerFault, errnoCode, errorMessage } from './faults.js';
import { runChecked, run } from '../../util/run.js';
import { DigestingStream, decompressor, peek, sniffCompression } from './decompress.js';
import { Tripwire, raced } from '../../util/tripwire.js';
import { PaxXattrTap } from './pax-tap.js';

const MKNOD = '/usr/bin/mknod';
const SETFATTR = '/usr/bin/setfattr';
const MAX_LINKS = 40;
const WHITEOUT_PREFIX = '.wh.';
const OPAQUE_MARKER = '.wh..wh..opq';

/** Where a layer's warnings go (pino in the main thread, a message port in a layer worker). */
export interface LayerLog {
  warn(obj: Record<string, unknown>, msg: string): void;
}

export interface UnpackOptions {
  /** An empty directory that receives the layer. */
  target: string;
  /** A scratch directory on the same filesystem, outside target. */
  scratch: string;
  /** Names the layer in errors and logs (e.g. its blob digest). */
  name: string;
  /** When given, the uncompressed stream must hash to it. */
  expectedDiffId?: string;
  log?: LayerLog;
}

export interface UnpackResult {
  /** sha256 of the uncompressed tar. */
  diffId: string;
  /** Bytes of the uncompressed tar. */
  tarBytes: number;
  entries: number;
}

interface PendingXattr {
  /** Path relative to the target, symlink-free when recorded. */
  rel: string;
  name: string;
  value: Buffer;
}

type Header = tar.Header;

/** getfattr's quoting for "# file:" lines and names: octal escapes for unsafe bytes. */
function quote(text: string): string {
  let out = '';
  for (const byte of Buffer.from(text, 'utf8')) {
    out +=
      byte <= 0x20 || byte >= 0x7f || byte === 0x5c || byte === 0x3d || byte === 0x22
        ? '\\' + byte.toString(8).padStart(3, '0')
        : String.fromCharCode(byte);
  }
  return out;
}

class LayerWriter {
  private whiteoutTemplate?: string;
  private readonly dirTimes: { rel: string; mtime: Date }[] = [];
  private readonly xattrs: PendingXattr[] = [];
  private readonly opaques: string[] = [];
  /** Relative paths known to be real directories (not symlinks): saves an lstat per parent per entry. */
  private readonly knownDirs = new Set<string>();
  /** Whiteout devices this layer created (relative paths). */
  private readonly whiteouts = new Set<string>();
  /**
   * Relative paths this layer has created. The target starts empty, so only
   * these can stand in a new entry's way: any other path needs no lstat.
   * (Were the target not empty, the exclusive creates below would fail
   * with EEXIST rather than write through what was there.)
   */
  private readonly made = new Set<string>();
  entries = 0;

  constructor(
    private readonly root: string,
    private readonly scratch: string,
    private readonly name: string,
    private readonly tap: PaxXattrTap,
    private readonly log?: LayerLog,
  ) {}

  private reject(entry: string, why: string): LayerFault {
    return new LayerFault('rejected', `layer ${this.name} rejected: entry ${JSON.stringify(entry)} ${why}`);
  }

  private abs(rel: string): string {
    return rel === '' ? this.root : posix.join(this.root, rel);
  }

  /** Entry name → path components, rejecting absolute paths and `..`. */
  private components(entry: string, raw: string): string[] {
    if (raw.includes('\0')) throw this.reject(entry, 'contains a NUL byte');
    if (raw.startsWith('/')) throw this.reject(entry, 'is an absolute path');
    const parts = raw.split('/').filter((p) => p !== '' && p !== '.');
    if (parts.includes('..')) throw this.reject(entry, "has a '..' component");
    return parts;
  }

  /**
   * Resolves a directory path inside the layer, following symlinks the
   * layer created as a plain extraction would, and refusing any that would
   * lead outside. Missing directories are created when `create` is set.
   * Returns the symlink-free relative path.
   */
  private resolveDir(entry: string, parts: readonly string[], create: boolean): string {
    const resolved: string[] = [];
    const pending = [...parts];
    let links = 0;
    while (pending.length > 0) {
      const part = pending.shift()!;
      if (part === '' || part === '.') continue;
      if (part === '..') {
        if (resolved.length === 0) throw this.reject(entry, 'leads outside the layer through a symlink');
        resolved.pop();
        continue;
      }
      const candidate = resolved.length > 0 ? `${resolved.join('/')}/${part}` : part;
      if (this.knownDirs.has(candidate)) {
        resolved.push(part);
        continue;
      }
      const path = posix.join(this.root, ...resolved, part);
      // Missing is the common case in a fresh layer: no exception built for it.
      const info = lstat(path, { throwIfNoEntry: false });
      if (!info) {
        if (!create)
          throw this.reject(entry, `refers to ${[...resolved, part].join('/')}, which does not exist`);
        mkdir(path, { mode: 0o755 });
        this.made.add(candidate);
        this.knownDirs.add(candidate);
        resolved.push(part);
        continue;
      }
      if (info.isSymbolicLink()) {
        if (++links > MAX_LINKS) throw this.reject(entry, 'passes through too many symlinks');
        const target = readlink(path);
        if (posix.isAbsolute(target)) {
          throw this.reject(
            entry,
            `passes through symlink ${[...resolved, part].join('/')} -> ${target}, which leads outside the layer`,
          );
        }
        pending.unshift(...target.split('/'));
        continue;
      }
      if (this.whiteouts.has(candidate) && create) {
        // Deleted from the layers below, then given content here: a new,
        // opaque directory (overlayfs would otherwise merge the old one in).
        this.replaceWhiteoutWithDir(candidate);
        resolved.push(part);
        continue;
      }
      if (!info.isDirectory())
        throw this.reject(
          entry,
          `has ${[...resolved, part].join('/')} as a parent, which is not a directory`,
        );
      this.knownDirs.add(candidate);
      resolved.push(part);
    }
    return resolved.join('/');
  }

  private replaceWhiteoutWithDir(rel: string): void {
    unlink(this.abs(rel));
    this.whiteouts.delete(rel);
    mkdir(this.abs(rel), { mode: 0o755 });
    this.made.add(rel);
    this.knownDirs.add(rel);
    this.opaques.push(rel);
  }

  /** Removes whatever is at `path` unless it is a directory and `keepDir`. Returns true if a directory was kept. */
  private clear(path: string, keepDir: boolean): boolean {
    const rel = posix.relative(this.root, path);
    if (!this.made.has(rel)) return false;
    const info = lstat(path, { throwIfNoEntry: false });
    if (!info) return false;
    if (info.isDirectory()) {
      if (keepDir) return true;
      rm(path, { recursive: true, force: true });
      for (const known of this.knownDirs) {
        if (known === rel || known.startsWith(`${rel}/`)) this.knownDirs.delete(known);
      }
    } else {
      unlink(path);
    }
    return false;
  }

  private exists(path: string): boolean {
    if (!this.made.has(posix.relative(this.root, path))) return false;
    return lstat(path, { throwIfNoEntry: false }) !== undefined;
  }

  private async mknod(
    path: string,
    mode: number,
    kind: 'c' | 'b' | 'p',
    major = 0,
    minor = 0,
  ): Promise<void> {
    const args = ['-m', (mode & 0o7777).toString(8), '--', path, kind];
    if (kind !== 'p') args.push(String(major), String(minor));
    await runChecked(MKNOD, args, { timeoutMs: 30_000 });
  }

  private async whiteout(entry: string, parentRel: string, target: string): Promise<void> {
    if (target === '' || target === '.' || target === '..' || target.includes('/')) {
      throw this.reject(entry, 'is a whiteout for an invalid name');
    }
    const path = this.abs(parentRel ? `${parentRel}/${target}` : target);
    // A whiteout hides lower layers only; what this layer itself put there stays.
    if (this.exists(path)) return;
    if (!this.whiteoutTemplate) {
      this.whiteoutTemplate = posix.join(this.scratch, 'whiteout');
      await this.mknod(this.whiteoutTemplate, 0, 'c', 0, 0);
    }
    // Hardlinks of one 0/0 device: overlayfs checks only type and rdev, and a
    // link costs no process spawn per whiteout.
    link(this.whiteoutTemplate, path);
    this.made.add(parentRel ? `${parentRel}/${target}` : target);
    this.whiteouts.add(parentRel ? `${parentRel}/${target}` : target);
  }

  async entry(header: Header, body: AsyncIterable<Buffer>): Promise<void> {
    this.entries++;
    const entry = header.name;
    const parts = this.components(entry, entry);
    const type = header.type ?? 'file';
    const mode = header.mode ?? 0o644;
    const uid = header.uid ?? 0;
    const gid = header.gid ?? 0;
    const mtime = header.mtime ?? new Date(0);
    if (parts.length === 0) {
      // "./": the layer root itself.
      if (type !== 'directory') throw this.reject(entry, 'names the layer root but is not a directory');
      lchown(this.root, uid, gid);
      chmod(this.root, mode & 0o7777);
      this.dirTimes.push({ rel: '', mtime });
      this.collectXattrs(header, '');
      return;
    }
    const base = parts.at(-1)!;
    const parentRel = this.resolveDir(entry, parts.slice(0, -1), true);
    const rel = parentRel ? `${parentRel}/${base}` : base;
    const path = this.abs(rel);

    if (base === OPAQUE_MARKER) {
      this.opaques.push(parentRel);
      return;
    }
    if (base.startsWith(WHITEOUT_PREFIX + WHITEOUT_PREFIX)) return; // other aufs metadata
    if (base.startsWith(WHITEOUT_PREFIX)) {
      await this.whiteout(entry, parentRel, base.slice(WHITEOUT_PREFIX.length));
      return;
    }

    switch (type) {
      case 'directory': {
        if (this.whiteouts.has(rel)) this.replaceWhiteoutWithDir(rel);
        else if (!this.clear(path, true)) mkdir(path, { mode: 0o700 });
        this.made.add(rel);
        this.knownDirs.add(rel);
        lchown(path, uid, gid);
        chmod(path, mode & 0o7777);
        this.dirTimes.push({ rel, mtime });
        break;
      }
      case 'file':
      case 'contiguous-file': {
        this.clear(path, false);
        this.made.add(rel);
        const fd = openSync(
          path,
          constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW,
          0o600,
        );
        try {
          // Synchronous writes: this runs in a layer worker thread, where a
          // thread-pool round trip per chunk would only add latency.
          for await (const chunk of body) {
            for (let off = 0; off < chunk.length;) off += writeSync(fd, chunk, off, chunk.length - off);
          }
          fchownSync(fd, uid, gid);
          // After chown, which clears set-id bits.
          fchmodSync(fd, mode & 0o7777);
          futimesSync(fd, mtime, mtime);
        } finally {
          closeSync(fd);
        }
        break;
      }
      case 'symlink': {
        this.clear(path, false);
        this.made.add(rel);
        symlink(header.linkname ?? '', path);
        lchown(path, uid, gid);
        lutimes(path, mtime, mtime);
        break;
      }
      case 'link': {
        const targetParts = this.components(entry, header.linkname ?? '');
        if (targetParts.length === 0) throw this.reject(entry, 'is a hardlink to the layer root');
        const targetParent = this.resolveDir(entry, targetParts.slice(0, -1), false);
        const targetRel = targetParent ? `${targetParent}/${targetParts.at(-1)!}` : targetParts.at(-1)!;
        let targetInfo;
        try {
          targetInfo = lstat(this.abs(targetRel));
        } catch (err) {
          if (errnoCode(err) !== 'ENOENT') throw err;
          throw this.reject(entry, `is a hardlink to ${header.linkname}, which is not in this layer`);
        }
        if (targetInfo.isDirectory()) throw this.reject(entry, 'is a hardlink to a directory');
        if (targetRel === rel) return;
        this.clear(path, false);
        this.made.add(rel);
        link(this.abs(targetRel), path);
        break;
      }
      case 'character-device':
      case 'block-device':
      case 'fifo': {
        this.clear(path, false);
        this.made.add(rel);
        const kind = type === 'fifo' ? 'p' : type === 'character-device' ? 'c' : 'b';
        await this.mknod(path, mode, kind, header.devmajor ?? 0, header.devminor ?? 0);
        lchown(path, uid, gid);
        if (mode & 0o7000) chmod(path, mode & 0o7777);
        lutimes(path, mtime, mtime);
        break;
      }
      default:
        this.log?.warn({ layer: this.name, entry, type }, 'skipping a tar entry of an unsupported type');
        return;
    }
    this.collectXattrs(header, rel);
  }

  private collectXattrs(header: Header, rel: string): void {
    for (const [key, value] of Object.entries((header.pax ?? {}) as Record<string, string>)) {
      if (typeof value !== 'string') continue;
      if (!key.startsWith('SCHILY.xattr.')) continue;
      const name = key.slice('SCHILY.xattr.'.length);
      // The opaque marker is berth's to set (from .wh..wh..opq), never the tar's.
      if (name.startsWith('trusted.overlay.')) continue;
      // The tap has the exact bytes; tar-stream's string is UTF-8-decoded.
      const raw = this.tap.value(this.entries - 1, name) ?? Buffer.from(value, 'utf8');
      this.xattrs.push({ rel, name, value: raw });
    }
  }

  /** Refuses to touch a path whose parents became symlinks after it was recorded. */
  private assertNoSymlinkParents(rel: string): void {
    const parts = rel.split('/').filter(Boolean);
    for (let i = 1; i < parts.length; i++) {
      const info = lstat(this.abs(parts.slice(0, i).join('/')));
      if (!info.isDirectory()) {
        throw this.reject(
          rel,
          `has ${parts.slice(0, i).join('/')} as a parent, which is no longer a directory`,
        );
      }
    }
  }

  private async setxattrs(items: PendingXattr[], required: boolean): Promise<void> {
    if (items.length === 0) return;
    let dump = '';
    for (const x of items) {
      this.assertNoSymlinkParents(x.rel);
      dump += `# file: ${quote(x.rel === '' ? '.' : x.rel)}\n${quote(x.name)}=0s${x.value.toString('base64')}\n\n`;
    }
    // One setfattr for the whole layer; -h so a symlink itself is the target.
    const res = await run(SETFATTR, ['-h', '--restore=-'], {
      cwd: this.root,
      input: dump,
      timeoutMs: 120_000,
    });
    if (res.code !== 0) {
      if (required) {
        throw new LayerFault(
          'internal',
          `layer ${this.name}: cannot set overlay xattrs: ${res.stderr.trim() || `setfattr exited with ${res.code}`}`,
        );
      }
      this.log?.warn(
        { layer: this.name, stderr: res.stderr.slice(0, 2000) },
        'some layer xattrs could not be set',
      );
    }
  }

  async finish(): Promise<void> {
    const opaque = [...new Set(this.opaques)].map((rel) => ({
      rel,
      name: 'trusted.overlay.opaque',
      value: Buffer.from('y'),
    }));
    await this.setxattrs(opaque, true);
    await this.setxattrs(this.xattrs, false);
    if (this.whiteoutTemplate) unlink(this.whiteoutTemplate);
    // Deepest first, after every child exists, so creating children does not move them.
    const times = [...this.dirTimes].sort((a, b) => b.rel.split('/').length - a.rel.split('/').length);
    for (const { rel, mtime } of times) {
      try {
        lutimes(this.abs(rel), mtime, mtime);
      } catch (err) {
        // A directory a later entry replaced is gone: nothing to date.
        if (errnoCode(err) !== 'ENOENT') throw err;
      }
    }
  }
}

/** The unpacking itself, on the calling thread (a layer worker's). */
export async function unpackInThisThread(
  source: Readable,
  options: UnpackOptions & {
    signal?: AbortSignal;
    /** Told the size of every decompressed chunk (the worker paces its GCs by it). */
    onTarBytes?: (n: number) => void;
    /** Told each compressed input chunk the decompressor is done with (see decompressor()). */
    onConsumed?: (chunk: Buffer) => void;
  },
): Promise<UnpackResult> {
  const tap = new PaxXattrTap();
  const onTarBytes = options.onTarBytes;
  const writer = new LayerWriter(options.target, options.scratch, options.name, tap, options.log);
  const head = await peek(source, 4);
  const digesting = new DigestingStream();
  const extract = tar.extract();
  /** Ends the feed when unpacking failed first (the feed may be waiting on the extractor). */
  const stopFeeding = new AbortController();
  const stopped = new Promise<never>((_, reject) => {
    const stop = () => reject(new Error('unpacking stopped'));
    stopFeeding.signal.addEventListener('abort', stop, { once: true });
    options.signal?.addEventListener('abort', () => stopFeeding.abort(), { once: true });
    if (options.signal?.aborted) stopFeeding.abort();
  });
  stopped.catch(() => undefined);
  // tar-stream's streams are streamx, not node streams: feed the extractor by hand.
  const feeding = pipeline(
    source,
    decompressor(sniffCompression(head), options.onConsumed),
    digesting,
    async (chunks: AsyncIterable<Buffer>, options?: { signal?: AbortSignal }) => {
      const signal = options?.signal ?? stopFeeding.signal;
      for await (const chunk of chunks) {
        // Destroyed (a bad entry, a write error): it emits nothing more to wait for.
        if (isDestroyed(extract)) throw new Error('the tar extractor stopped');
        tap.write(chunk);
        onTarBytes?.(chunk.length);
        // The pipeline failed upstream (source destroyed, bad compression):
        // it waits for this function, so this must not wait for the extractor.
        if (!extract.write(chunk)) await drained(extract, signal);
        signal.throwIfAborted();
      }
      (extract as unknown as { end(): void }).end();
    },
    { signal: stopFeeding.signal },
  );
  // A failed feed (bad compression, source error, abort) ends the entry loop
  // below: destroying the extractor alone does not always wake a reader of
  // the current entry, so every read also races the failure.
  const fed = Promise.race([
    stopped,
    feeding.then(
      () => new Promise<never>(() => undefined),
      (err: unknown) => {
        throw err instanceof Error ? err : new Error(String(err));
      },
    ),
  ]).catch((err: unknown) => {
    extract.destroy(err as Error);
    throw err;
  });
  fed.catch(() => undefined);
  const tripwire = new Tripwire(fed);
  try {
    for await (const entry of raced(
      extract as unknown as AsyncIterable<{ header: Header; resume(): void }>,
      tripwire,
    )) {
      await writer.entry(entry.header, raced(entry as unknown as AsyncIterable<Buffer>, tripwire));
      entry.resume();
    }
    await feeding;
  } catch (err) {
    extract.destroy(err instanceof Error ? err : new Error(String(err)));
    source.destroy();
    stopFeeding.abort();
    // Not awaited: the feed only writes to the (destroyed) extractor, never
    // to disk, and a pipeline whose source was destroyed after it ended may
    // never settle.
    feeding.catch(() => undefined);
    if (err instanceof LayerFault) throw err;
    const code = errnoCode(err);
    // Local filesystem trouble is berth's, not the layer's fault.
    if (code !== undefined && /^E[A-Z]+$/.test(code)) throw err;
    throw new LayerFault('rejected', `layer ${options.name}: cannot unpack: ${errorMessage(err)}`);
  }
  const diffId = digesting.digest();
  if (options.expectedDiffId !== undefined && diffId !== options.expectedDiffId) {
    throw new LayerFault(
      'mismatch',
      `layer ${options.name}: uncompressed content has digest ${diffId}, but the image config says ${options.expectedDiffId}`,
    );
  }
  await writer.finish();
  return { diffId, tarBytes: digesting.bytes, entries: writer.entries };
}

function isDestroyed(stream: unknown): boolean {
  return (
    (stream as { destroyed?: boolean; destroying?: boolean }).destroyed === true ||
    (stream as { destroying?: boolean }).destroying === true
  );
}

function drained(
  stream: {
    on(event: string, fn: () => void): unknown;
    off(event: string, fn: () => void): unknown;
  },
  signal?: AbortSignal,
): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      stream.off('drain', done);
      stream.off('close', done);
      signal?.removeEventListener('abort', done);
      resolve();
    };
    stream.on('drain', done);
    stream.on('close', done);
    signal?.addEventListener('abort', done, { once: true });
    if (signal?.aborted) done();
    // Destroyed already: no 'close' is coming.
    if (isDestroyed(stream)) done();
  });
}
