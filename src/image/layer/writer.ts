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
  readFileSync,
  readlinkSync as readlink,
  rmSync as rm,
  symlinkSync as symlink,
  unlinkSync as unlink,
  chmodSync as chmod,
  writeSync,
} from 'node:fs';
import { createHash } from 'node:crypto';
import { posix } from 'node:path';
import type { Readable } from 'node:stream';
import { LayerFault, errnoCode, errorMessage } from './faults.js';
import { runChecked, run } from '../../util/run.js';
import { decompressed } from './decompress.js';
import {
  TarFormatError,
  TarReader,
  displayName,
  type TarBody,
  type TarEntryResult,
  type TarHeader,
} from './tar.js';

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

/** getfattr's quoting for "# file:" lines and names: octal escapes for unsafe bytes. */
function quote(bytes: Buffer): string {
  let out = '';
  for (const byte of bytes) {
    out +=
      byte <= 0x20 || byte >= 0x7f || byte === 0x5c || byte === 0x3d || byte === 0x22
        ? '\\' + byte.toString(8).padStart(3, '0')
        : String.fromCharCode(byte);
  }
  return out;
}

/**
 * The process umask, read where it does not change it (process.umask() sets
 * it twice, racing other threads); 0o777 when unknown, so that only a file
 * of mode 0 is trusted to be created with its final mode.
 */
function currentUmask(): number {
  try {
    const m = /^Umask:\s*([0-7]+)$/m.exec(readFileSync('/proc/self/status', 'latin1'));
    return m ? parseInt(m[1], 8) : 0o777;
  } catch {
    return 0o777;
  }
}

class LayerWriter {
  private whiteoutTemplate?: string;
  private readonly dirTimes: { rel: string; mtime: number }[] = [];
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
  /**
   * The group of each directory made or chowned here, where known. A file
   * made in a directory of this process's group has this process's group,
   * whatever the directory's set-group-ID bit or the filesystem's `grpid`
   * option; elsewhere its group is chowned. (Most entries want 0:0, which a
   * file made by root in a root-group directory already has.)
   */
  private readonly dirGroups = new Map<string, number>();
  /** A file whose mode has no bit this umask clears is created with that mode: no chmod. */
  private readonly umask = currentUmask();
  private readonly creator = { uid: process.geteuid?.() ?? -1, gid: process.getegid?.() ?? -1 };
  /** The file whose data is being written (closed if unpacking stops). */
  private openFile?: number;
  entries = 0;

  private readonly root: string;

  constructor(
    root: string,
    private readonly scratch: string,
    private readonly name: string,
    private readonly log?: LayerLog,
  ) {
    this.root = Buffer.from(posix.resolve(root), 'utf8').toString('latin1');
    // The target's group is whatever the caller's mkdir gave it.
    this.dirGroups.set('', lstat(this.abs('')).gid);
  }

  /** Whether something this process just made in `parentRel` lacks the owner uid:gid. */
  private needsChown(uid: number, gid: number, parentRel: string): boolean {
    return (
      uid !== this.creator.uid ||
      gid !== this.creator.gid ||
      this.dirGroups.get(parentRel) !== this.creator.gid
    );
  }

  /** A directory mkdir made (and nobody chowned): this process's group if its parent's is. */
  private noteMadeDir(rel: string): void {
    const slash = rel.lastIndexOf('/');
    const parent = slash < 0 ? '' : rel.slice(0, slash);
    if (this.dirGroups.get(parent) === this.creator.gid) this.dirGroups.set(rel, this.creator.gid);
    else this.dirGroups.delete(rel);
  }

  private reject(entry: string, why: string): LayerFault {
    return new LayerFault(
      'rejected',
      `layer ${this.name} rejected: entry ${JSON.stringify(displayName(entry))} ${displayName(why)}`,
    );
  }

  /**
   * The path of `rel` for the filesystem. Paths here are byte strings (see
   * TarHeader), the root's too; `rel` is always normalised (no empty, `.` or
   * `..` parts), so joining is concatenating.
   */
  private abs(rel: string): Buffer {
    return Buffer.from(rel === '' ? this.root : `${this.root}/${rel}`, 'latin1');
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
    // A parent seen before: every part of it was checked then (and the record
    // of it and of everything under it is dropped if it is replaced).
    const whole = parts.join('/');
    if (this.knownDirs.has(whole)) return whole;
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
      const path = this.abs(candidate);
      // Missing is the common case in a fresh layer: no exception built for it.
      const info = lstat(path, { throwIfNoEntry: false });
      if (!info) {
        if (!create)
          throw this.reject(entry, `refers to ${[...resolved, part].join('/')}, which does not exist`);
        mkdir(path, { mode: 0o755 });
        this.made.add(candidate);
        this.knownDirs.add(candidate);
        this.noteMadeDir(candidate);
        resolved.push(part);
        continue;
      }
      if (info.isSymbolicLink()) {
        if (++links > MAX_LINKS) throw this.reject(entry, 'passes through too many symlinks');
        const target = readlink(path, { encoding: 'buffer' }).toString('latin1');
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
    this.noteMadeDir(rel);
    this.opaques.push(rel);
  }

  /** Removes what this layer put at `rel` unless it is a directory and `keepDir`. Returns true if a directory was kept. */
  private clear(rel: string, keepDir: boolean): boolean {
    if (!this.made.has(rel)) return false;
    const path = this.abs(rel);
    const info = lstat(path, { throwIfNoEntry: false });
    if (!info) return false;
    if (info.isDirectory()) {
      if (keepDir) return true;
      rm(path, { recursive: true, force: true });
      for (const known of this.knownDirs) {
        if (known === rel || known.startsWith(`${rel}/`)) this.knownDirs.delete(known);
      }
      for (const known of this.dirGroups.keys()) {
        if (known === rel || known.startsWith(`${rel}/`)) this.dirGroups.delete(known);
      }
    } else {
      unlink(path);
    }
    return false;
  }

  private exists(rel: string): boolean {
    if (!this.made.has(rel)) return false;
    return lstat(this.abs(rel), { throwIfNoEntry: false }) !== undefined;
  }

  /** Makes a device node or fifo at `path` (in the scratch directory: its name is plain text). */
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

  private nodes = 0;

  /**
   * A device node or fifo at `rel`: made in the scratch directory (an argument
   * to mknod must be text, a name in the layer may not be) and linked into
   * place, which fails rather than replace anything.
   */
  private async makeNode(rel: string, mode: number, kind: 'c' | 'b' | 'p', major: number, minor: number) {
    const temp = posix.join(this.scratch, `node-${this.nodes++}`);
    await this.mknod(temp, mode, kind, major, minor);
    try {
      link(temp, this.abs(rel));
    } finally {
      unlink(temp);
    }
  }

  /** Returns a promise only for the layer's first whiteout, which makes the template device. */
  private whiteout(entry: string, parentRel: string, target: string): Promise<undefined> | undefined {
    if (target === '' || target === '.' || target === '..' || target.includes('/')) {
      throw this.reject(entry, 'is a whiteout for an invalid name');
    }
    const rel = parentRel ? `${parentRel}/${target}` : target;
    // A whiteout hides lower layers only; what this layer itself put there stays.
    if (this.exists(rel)) return undefined;
    if (this.whiteoutTemplate) {
      this.linkWhiteout(rel);
      return undefined;
    }
    const template = posix.join(this.scratch, 'whiteout');
    return this.mknod(template, 0, 'c', 0, 0).then(() => {
      this.whiteoutTemplate = template;
      this.linkWhiteout(rel);
      return undefined;
    });
  }

  private linkWhiteout(rel: string): void {
    // Hardlinks of one 0/0 device: overlayfs checks only type and rdev, and a
    // link costs no process spawn per whiteout.
    link(this.whiteoutTemplate!, this.abs(rel));
    this.made.add(rel);
    this.whiteouts.add(rel);
  }

  /**
   * Creates what one tar entry describes. Synchronous but for device nodes
   * and the first whiteout (a process spawn each); a regular file's data is
   * written as the reader passes it to the returned body.
   */
  entry(header: TarHeader): TarEntryResult {
    this.entries++;
    const entry = header.name;
    const parts = this.components(entry, entry);
    const { type, mode, uid, gid, mtime } = header;
    if (parts.length === 0) {
      // "./": the layer root itself.
      if (type !== 'directory') throw this.reject(entry, 'names the layer root but is not a directory');
      lchown(this.abs(''), uid, gid);
      chmod(this.abs(''), mode);
      this.dirGroups.set('', gid);
      this.dirTimes.push({ rel: '', mtime });
      this.collectXattrs(header, '');
      return undefined;
    }
    const base = parts.at(-1)!;
    const parentRel = this.resolveDir(entry, parts.slice(0, -1), true);
    const rel = parentRel ? `${parentRel}/${base}` : base;
    const path = this.abs(rel);

    if (base === OPAQUE_MARKER) {
      this.opaques.push(parentRel);
      return undefined;
    }
    if (base.startsWith(WHITEOUT_PREFIX + WHITEOUT_PREFIX)) return undefined; // other aufs metadata
    if (base.startsWith(WHITEOUT_PREFIX))
      return this.whiteout(entry, parentRel, base.slice(WHITEOUT_PREFIX.length));

    switch (type) {
      case 'directory': {
        if (this.whiteouts.has(rel)) this.replaceWhiteoutWithDir(rel);
        else if (!this.clear(rel, true)) mkdir(path, { mode: 0o700 });
        this.made.add(rel);
        this.knownDirs.add(rel);
        lchown(path, uid, gid);
        chmod(path, mode);
        this.dirGroups.set(rel, gid);
        this.dirTimes.push({ rel, mtime });
        break;
      }
      case 'file':
      case 'contiguous-file': {
        this.clear(rel, false);
        this.made.add(rel);
        // Two syscalls of the six a small file costs are saved when the create
        // itself gives the final owner and mode (set-ID bits always need chmod).
        const modeOnCreate = (mode & 0o7000) === 0 && (mode & this.umask) === 0;
        const chownNeeded = this.needsChown(uid, gid, parentRel);
        const fd = openSync(
          path,
          constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW,
          modeOnCreate ? mode & 0o777 : 0o600,
        );
        this.openFile = fd;
        this.collectXattrs(header, rel);
        return this.fileBody(
          fd,
          chownNeeded ? { uid, gid } : undefined,
          modeOnCreate ? undefined : mode,
          mtime,
        );
      }
      case 'symlink': {
        this.clear(rel, false);
        this.made.add(rel);
        symlink(Buffer.from(header.linkname, 'latin1'), path);
        if (this.needsChown(uid, gid, parentRel)) lchown(path, uid, gid);
        lutimes(path, mtime, mtime);
        break;
      }
      case 'link': {
        const targetParts = this.components(entry, header.linkname);
        if (targetParts.length === 0) throw this.reject(entry, 'is a hardlink to the layer root');
        const targetParent = this.resolveDir(entry, targetParts.slice(0, -1), false);
        const targetRel = targetParent ? `${targetParent}/${targetParts.at(-1)!}` : targetParts.at(-1)!;
        const targetInfo = lstat(this.abs(targetRel), { throwIfNoEntry: false });
        if (!targetInfo) {
          throw this.reject(entry, `is a hardlink to ${header.linkname}, which is not in this layer`);
        }
        if (targetInfo.isDirectory()) throw this.reject(entry, 'is a hardlink to a directory');
        if (targetRel === rel) return undefined;
        this.clear(rel, false);
        this.made.add(rel);
        link(this.abs(targetRel), path);
        break;
      }
      case 'character-device':
      case 'block-device':
      case 'fifo': {
        this.clear(rel, false);
        this.made.add(rel);
        const kind = type === 'fifo' ? 'p' : type === 'character-device' ? 'c' : 'b';
        return this.makeNode(rel, mode, kind, header.devmajor, header.devminor).then(() => {
          lchown(path, uid, gid);
          if (mode & 0o7000) chmod(path, mode);
          lutimes(path, mtime, mtime);
          this.collectXattrs(header, rel);
          return undefined;
        });
      }
      default:
        this.log?.warn(
          { layer: this.name, entry: displayName(entry), typeflag: header.typeflag },
          'skipping a tar entry of an unsupported type',
        );
        return undefined;
    }
    this.collectXattrs(header, rel);
    return undefined;
  }

  /** `owner`/`mode` undefined: the file was created with them. */
  private fileBody(
    fd: number,
    owner: { uid: number; gid: number } | undefined,
    mode: number | undefined,
    mtime: number,
  ): TarBody {
    return {
      // Synchronous writes: this runs in a layer worker thread, where a
      // thread-pool round trip per chunk would only add latency.
      write: (data) => {
        for (let off = 0; off < data.length;) off += writeSync(fd, data, off, data.length - off);
      },
      end: () => {
        this.openFile = undefined;
        try {
          if (owner) fchownSync(fd, owner.uid, owner.gid);
          // After chown, which clears set-id bits.
          if (mode !== undefined) fchmodSync(fd, mode);
          futimesSync(fd, mtime, mtime);
        } finally {
          closeSync(fd);
        }
      },
    };
  }

  /** Unpacking stopped: closes the file being written, if any. */
  abandon(): void {
    if (this.openFile === undefined) return;
    const fd = this.openFile;
    this.openFile = undefined;
    try {
      closeSync(fd);
    } catch {
      // already closed
    }
  }

  private collectXattrs(header: TarHeader, rel: string): void {
    if (!header.xattrs) return;
    for (const [name, value] of header.xattrs) {
      // The opaque marker is berth's to set (from .wh..wh..opq), never the tar's.
      if (name.startsWith('trusted.overlay.')) continue;
      this.xattrs.push({ rel, name, value });
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
      const file = Buffer.from(x.rel === '' ? '.' : x.rel, 'latin1');
      dump += `# file: ${quote(file)}\n${quote(Buffer.from(x.name, 'utf8'))}=0s${x.value.toString('base64')}\n\n`;
    }
    // One setfattr for the whole layer; -h so a symlink itself is the target.
    const res = await run(SETFATTR, ['-h', '--restore=-'], {
      cwd: this.abs('').toString('utf8'),
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
    /** Told each compressed input chunk the decompressor is done with (see decompressed()). */
    onConsumed?: (chunk: Buffer) => void;
  },
): Promise<UnpackResult> {
  const onTarBytes = options.onTarBytes;
  const writer = new LayerWriter(options.target, options.scratch, options.name, options.log);
  const reader = new TarReader((header) => writer.entry(header));
  const diff = createHash('sha256');
  let tarBytes = 0;
  const signal = options.signal;
  let stream: Readable = source;
  const stop = () => stream.destroy(new Error('unpacking stopped'));
  signal?.addEventListener('abort', stop, { once: true });
  try {
    signal?.throwIfAborted();
    stream = await decompressed(source, options.onConsumed);
    if (signal?.aborted) stop();
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      // Every byte counts for the diff ID, including any after the end of the archive.
      diff.update(chunk);
      tarBytes += chunk.length;
      onTarBytes?.(chunk.length);
      const paused = reader.write(chunk);
      if (paused) await paused;
    }
    reader.end();
  } catch (err) {
    writer.abandon();
    stream.destroy();
    source.destroy();
    if (err instanceof LayerFault) throw err;
    if (err instanceof TarFormatError) {
      throw new LayerFault('rejected', `layer ${options.name}: not a valid tar archive: ${err.message}`);
    }
    const code = errnoCode(err);
    // Local filesystem trouble is berth's, not the layer's fault.
    if (code !== undefined && /^E[A-Z]+$/.test(code)) throw err;
    throw new LayerFault('rejected', `layer ${options.name}: cannot unpack: ${errorMessage(err)}`);
  } finally {
    signal?.removeEventListener('abort', stop);
  }
  const diffId = `sha256:${diff.digest('hex')}`;
  if (options.expectedDiffId !== undefined && diffId !== options.expectedDiffId) {
    throw new LayerFault(
      'mismatch',
      `layer ${options.name}: uncompressed content has digest ${diffId}, but the image config says ${options.expectedDiffId}`,
    );
  }
  await writer.finish();
  return { diffId, tarBytes, entries: writer.entries };
}
