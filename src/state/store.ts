/**
 * A crash-safe record store: one JSON file per object under one directory,
 * each written with write-temp + fsync + rename, all loaded into memory at
 * start-up. Reads are served from memory; every change goes to disk before the
 * in-memory copy is updated, so what callers see is what survives a crash.
 */
import { mkdir, readdir, readFile, rename, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { errnoCode, errorMessage, InvalidArgumentError } from '../errors.js';
import { fsyncDir, writeJsonAtomic } from '../util/atomic-file.js';
import type { Logger } from '../log.js';

/** A stored object: its id is also its file name. */
export interface StoredRecord {
  id: string;
}

/**
 * Checks a parsed file and returns it typed, or throws naming what is wrong.
 * Records that fail are set aside (renamed *.corrupt), never silently dropped.
 */
export type RecordParser<T extends StoredRecord> = (value: unknown) => T;

const ID_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;

/**
 * Told of every durable change: `before` is the record as last written (a
 * copy, so callers that mutate a record in place before put still show the
 * transition), `after` is undefined on delete.
 */
export type RecordListener<T> = (before: T | undefined, after: T | undefined) => void;

export class RecordStore<T extends StoredRecord> {
  private readonly records = new Map<string, T>();
  private readonly listeners: RecordListener<T>[] = [];
  /** Copies of what was last written, kept only while someone listens. */
  private readonly written = new Map<string, T>();

  private constructor(
    readonly dir: string,
    private readonly kind: string,
    private readonly parse: RecordParser<T>,
  ) {}

  /** Opens (creating) the directory and loads every record in it. */
  static async open<T extends StoredRecord>(
    dir: string,
    kind: string,
    parse: RecordParser<T>,
    log?: Logger,
  ): Promise<RecordStore<T>> {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const store = new RecordStore<T>(dir, kind, parse);
    for (const entry of await readdir(dir)) {
      const path = join(dir, entry);
      // Temp files of a write that never reached its rename.
      if (entry.startsWith('.') && entry.endsWith('.tmp')) {
        await unlink(path).catch(() => undefined);
        continue;
      }
      if (!entry.endsWith('.json')) continue;
      try {
        const record = parse(JSON.parse(await readFile(path, 'utf8')) as unknown);
        if (`${record.id}.json` !== entry) throw new Error(`id ${record.id} does not match the file name`);
        store.records.set(record.id, record);
      } catch (err) {
        log?.error({ path, err: errorMessage(err) }, `unreadable ${kind} record set aside`);
        await rename(path, `${path}.corrupt`).catch(() => undefined);
      }
    }
    return store;
  }

  private path(id: string): string {
    if (!ID_RE.test(id)) throw new InvalidArgumentError(`${this.kind} id ${JSON.stringify(id)} is not valid`);
    return join(this.dir, `${id}.json`);
  }

  get(id: string): T | undefined {
    return this.records.get(id);
  }

  has(id: string): boolean {
    return this.records.has(id);
  }

  all(): T[] {
    return [...this.records.values()];
  }

  ids(): string[] {
    return [...this.records.keys()];
  }

  get size(): number {
    return this.records.size;
  }

  /** Calls listener after each put and delete (never for records loaded at open). */
  onChange(listener: RecordListener<T>): void {
    if (this.listeners.length === 0) {
      for (const record of this.records.values()) this.written.set(record.id, structuredClone(record));
    }
    this.listeners.push(listener);
  }

  private notify(id: string, after: T | undefined): void {
    if (this.listeners.length === 0) return;
    const before = this.written.get(id);
    if (after) this.written.set(id, structuredClone(after));
    else this.written.delete(id);
    for (const listener of this.listeners) listener(before, after);
  }

  /**
   * Writes the record durably, then makes it visible. `derivable`: a change
   * that start-up reconciliation can derive again from what really exists
   * (a container's start, from the runtime), without the directory's fsync;
   * a power loss may lose it, never tear it. (The new file's data is still
   * fsynced before the rename: otherwise the journal may commit the rename
   * first, and the record would come back empty, i.e. gone.)
   */
  async put(record: T, options: { derivable?: boolean } = {}): Promise<void> {
    const path = this.path(record.id);
    try {
      await writeJsonAtomic(path, record, { durable: !options.derivable });
    } catch (err) {
      throw new Error(`writing the ${this.kind} record ${record.id}: ${errorMessage(err)}`, { cause: err });
    }
    this.records.set(record.id, record);
    this.notify(record.id, record);
  }

  /** Removes the record durably; absent is fine. */
  async delete(id: string): Promise<void> {
    try {
      await unlink(this.path(id));
      await fsyncDir(this.dir);
    } catch (err) {
      if (errnoCode(err) !== 'ENOENT') throw err;
    }
    const existed = this.records.delete(id);
    if (existed) this.notify(id, undefined);
  }
}
