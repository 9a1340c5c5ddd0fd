/**
 * Writable-layer usage (bytes and inodes under a container's upper dir) and
 * pod network counters (from /proc/<pid>/net/dev, which shows the network
 * namespace of that process).
 */
import { lstat, opendir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { errnoCode } from '../errors.js';

export interface DirUsage {
  bytes: bigint;
  inodes: bigint;
}

/**
 * Walks a directory tree without following symlinks: bytes as allocated
 * blocks (what the layer costs on disk), inodes counted once per hard link
 * group. A missing directory is empty.
 */
export async function dirUsage(root: string): Promise<DirUsage> {
  const seen = new Set<string>();
  let bytes = 0n;
  let inodes = 0n;
  const visit = async (path: string): Promise<void> => {
    let st;
    try {
      st = await lstat(path, { bigint: true });
    } catch (err) {
      if (errnoCode(err) === 'ENOENT') return;
      throw err;
    }
    const key = `${st.dev}:${st.ino}`;
    if (seen.has(key)) return;
    seen.add(key);
    inodes += 1n;
    bytes += st.blocks * 512n;
    if (!st.isDirectory()) return;
    let dir;
    try {
      dir = await opendir(path);
    } catch (err) {
      if (errnoCode(err) === 'ENOENT') return;
      throw err;
    }
    for await (const entry of dir) await visit(join(path, entry.name));
  };
  await visit(root);
  return { bytes, inodes };
}

export interface InterfaceCounters {
  name: string;
  rxBytes: bigint;
  rxErrors: bigint;
  txBytes: bigint;
  txErrors: bigint;
}

/**
 * Parses /proc/net/dev: after "iface:" come 8 receive fields (bytes, packets,
 * errs, ...) then 8 transmit fields.
 */
export function parseNetDev(text: string): InterfaceCounters[] {
  const out: InterfaceCounters[] = [];
  for (const line of text.split('\n')) {
    const colon = line.indexOf(':');
    if (colon < 0) continue;
    const name = line.slice(0, colon).trim();
    const fields = line
      .slice(colon + 1)
      .trim()
      .split(/\s+/);
    if (!name || fields.length < 16 || !fields.every((f) => /^\d+$/.test(f))) continue;
    out.push({
      name,
      rxBytes: BigInt(fields[0]),
      rxErrors: BigInt(fields[2]),
      txBytes: BigInt(fields[8]),
      txErrors: BigInt(fields[10]),
    });
  }
  return out;
}

/** Counters of every interface but loopback in the netns of pid; undefined when it is gone. */
export async function netnsCounters(pid: number): Promise<InterfaceCounters[] | undefined> {
  try {
    return parseNetDev(await readFile(`/proc/${pid}/net/dev`, 'utf8')).filter((i) => i.name !== 'lo');
  } catch (err) {
    if (errnoCode(err) === 'ENOENT' || errnoCode(err) === 'ESRCH') return undefined;
    throw err;
  }
}
