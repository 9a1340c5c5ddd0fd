/**
 * CPU and memory counters of a cgroup, from cgroup v1 (cpuacct + memory
 * controllers) or v2 (unified). A container's cgroup is found through
 * /proc/<pid>/cgroup, which works for the cgroupfs and the systemd driver
 * alike.
 */
import { readFileSync } from 'node:fs';
import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { errnoCode } from '../errors.js';

export const CGROUP_ROOT = '/sys/fs/cgroup';

/** Where a process sits: v1 paths by controller, and the v2 path. */
export interface ProcCgroups {
  v1: Map<string, string>;
  v2?: string;
}

/** Parses /proc/<pid>/cgroup ("ID:controllers:path" per line). */
export function parseProcCgroup(text: string): ProcCgroups {
  const out: ProcCgroups = { v1: new Map() };
  for (const line of text.split('\n')) {
    const first = line.indexOf(':');
    const second = line.indexOf(':', first + 1);
    if (first < 0 || second < 0) continue;
    const controllers = line.slice(first + 1, second);
    const path = line.slice(second + 1);
    if (line.slice(0, first) === '0' && controllers === '') out.v2 = path;
    else for (const c of controllers.split(',')) if (c) out.v1.set(c, path);
  }
  return out;
}

/** A cgroup as directories to read from: v1 per controller, or one v2 dir. */
export type CgroupDirs =
  { version: 1; cpuacct?: string; memory?: string; pids?: string } | { version: 2; dir: string };

async function exists(path: string): Promise<boolean> {
  try {
    await readFile(path);
    return true;
  } catch {
    return false;
  }
}

/**
 * The cgroup directories of a process; undefined when it is gone. v1 wins
 * where its controllers are mounted (hybrid hosts have an empty v2 tree).
 */
export async function cgroupDirsOfPid(pid: number, root = CGROUP_ROOT): Promise<CgroupDirs | undefined> {
  let text: string;
  try {
    text = await readFile(`/proc/${pid}/cgroup`, 'utf8');
  } catch (err) {
    if (errnoCode(err) === 'ENOENT' || errnoCode(err) === 'ESRCH') return undefined;
    throw err;
  }
  return cgroupDirsFor(parseProcCgroup(text), root);
}

/** Maps parsed /proc/<pid>/cgroup paths onto the hierarchy mounted at root. */
export async function cgroupDirsFor(cg: ProcCgroups, root = CGROUP_ROOT): Promise<CgroupDirs | undefined> {
  if (cg.v1.has('memory') || cg.v1.has('cpuacct')) {
    const mounts = await readdir(root).catch(() => [] as string[]);
    // The mount dir of a controller: "cpuacct", or a co-mounted "cpu,cpuacct".
    const dirOf = (controller: string): string | undefined => {
      const path = cg.v1.get(controller);
      if (path === undefined) return undefined;
      const mount =
        mounts.find((m) => m === controller) ?? mounts.find((m) => m.split(',').includes(controller));
      return mount ? join(root, mount, path) : undefined;
    };
    return { version: 1, cpuacct: dirOf('cpuacct'), memory: dirOf('memory'), pids: dirOf('pids') };
  }
  if (cg.v2 !== undefined) {
    const unified = (await exists(join(root, 'cgroup.controllers'))) ? root : join(root, 'unified');
    return { version: 2, dir: join(unified, cg.v2) };
  }
  return undefined;
}

/**
 * The directories of a cgroup given by its path (e.g. a pod's cgroup parent
 * in cgroupfs form), on whichever hierarchy the host uses.
 */
export async function cgroupDirsOfPath(path: string, root = CGROUP_ROOT): Promise<CgroupDirs> {
  if (await exists(join(root, 'cgroup.controllers'))) return { version: 2, dir: join(root, path) };
  const mounts = await readdir(root).catch(() => [] as string[]);
  const dirOf = (controller: string): string | undefined => {
    const mount =
      mounts.find((m) => m === controller) ?? mounts.find((m) => m.split(',').includes(controller));
    return mount ? join(root, mount, path) : undefined;
  };
  return { version: 1, cpuacct: dirOf('cpuacct'), memory: dirOf('memory'), pids: dirOf('pids') };
}

/** Wall-clock nanoseconds since the epoch, at sub-millisecond resolution (for rates). */
export function nowNs(): bigint {
  const ms = performance.timeOrigin + performance.now();
  const whole = Math.floor(ms);
  return BigInt(whole) * 1_000_000n + BigInt(Math.round((ms - whole) * 1_000_000));
}

/** "key value" lines (memory.stat, cpu.stat) as numbers. */
export function parseFlatKeyed(text: string): Map<string, bigint> {
  const out = new Map<string, bigint>();
  for (const line of text.split('\n')) {
    const [key, value] = line.trim().split(/\s+/);
    if (key && value && /^\d+$/.test(value)) out.set(key, BigInt(value));
  }
  return out;
}

/** A cgroup file that is not there: the controller or cgroup is absent, or went away. */
function isAbsent(err: unknown): boolean {
  const code = errnoCode(err);
  return code === 'ENOENT' || code === 'ENODEV' || code === 'ENOTDIR';
}

async function readText(path: string | undefined): Promise<string | undefined> {
  if (!path) return undefined;
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    if (isAbsent(err)) return undefined;
    throw err;
  }
}

async function readNumber(path: string | undefined): Promise<bigint | undefined> {
  return parseNumber(await readText(path));
}

function parseNumber(text: string | undefined): bigint | undefined {
  const trimmed = text?.trim();
  return trimmed && /^\d+$/.test(trimmed) ? BigInt(trimmed) : undefined;
}

/**
 * A CPU counter with the moment it was read. Synchronously: a rate divides
 * the counter's growth by the time between two samples, and an asynchronous
 * read happens whenever the thread pool gets to it, tens of ms after the
 * call on a busy node (a one-thread busy loop measured 1.37 cores). A
 * cgroupfs counter is kernel memory, read in microseconds, no disk involved.
 */
function readCounterNow(path: string | undefined): { text?: string; timestampNs: bigint } {
  if (!path) return { timestampNs: nowNs() };
  try {
    const text = readFileSync(path, 'utf8');
    return { text, timestampNs: nowNs() };
  } catch (err) {
    if (isAbsent(err)) return { timestampNs: nowNs() };
    throw err;
  }
}

export interface MemorySample {
  usageBytes: bigint;
  /** usage minus inactive file pages, never below 0 (kubelet's eviction signal). */
  workingSetBytes: bigint;
  rssBytes: bigint;
  pageFaults: bigint;
  majorPageFaults: bigint;
  /** limit minus working set; undefined without a limit. */
  availableBytes?: bigint;
}

export interface CgroupSample {
  /** Nanoseconds since the epoch when the CPU counter was read (rates depend on it). */
  timestampNs: bigint;
  /** Cumulative CPU time, nanoseconds. */
  cpuUsageNs?: bigint;
  memory?: MemorySample;
  /** Processes in the cgroup. */
  processCount?: bigint;
  /** Swap in use and, with a swap limit, what is left of it. */
  swap?: { usageBytes: bigint; availableBytes?: bigint };
}

/** v1 reports "no limit" as a page-rounded LONG_MAX; anything this large is unlimited. */
const UNLIMITED = 1n << 60n;

function memorySample(
  usage: bigint,
  stat: Map<string, bigint>,
  limit: bigint | undefined,
  keys: { inactiveFile: string[]; rss: string[]; pgfault: string[]; pgmajfault: string[] },
): MemorySample {
  const pick = (names: string[]): bigint => {
    for (const n of names) {
      const v = stat.get(n);
      if (v !== undefined) return v;
    }
    return 0n;
  };
  const inactive = pick(keys.inactiveFile);
  const workingSet = usage > inactive ? usage - inactive : 0n;
  const sample: MemorySample = {
    usageBytes: usage,
    workingSetBytes: workingSet,
    rssBytes: pick(keys.rss),
    pageFaults: pick(keys.pgfault),
    majorPageFaults: pick(keys.pgmajfault),
  };
  if (limit !== undefined && limit < UNLIMITED)
    sample.availableBytes = limit > workingSet ? limit - workingSet : 0n;
  return sample;
}

/** Reads CPU, memory and process counters of a cgroup. Missing files leave fields out. */
export async function readCgroup(dirs: CgroupDirs): Promise<CgroupSample> {
  if (dirs.version === 1) {
    const counter = readCounterNow(dirs.cpuacct && join(dirs.cpuacct, 'cpuacct.usage'));
    const { timestampNs } = counter;
    const cpu = parseNumber(counter.text);
    const [usage, statText, limit, pids, memsw, memswLimit] = await Promise.all([
      readNumber(dirs.memory && join(dirs.memory, 'memory.usage_in_bytes')),
      readText(dirs.memory && join(dirs.memory, 'memory.stat')),
      readNumber(dirs.memory && join(dirs.memory, 'memory.limit_in_bytes')),
      readNumber(dirs.pids && join(dirs.pids, 'pids.current')),
      readNumber(dirs.memory && join(dirs.memory, 'memory.memsw.usage_in_bytes')),
      readNumber(dirs.memory && join(dirs.memory, 'memory.memsw.limit_in_bytes')),
    ]);
    const sample: CgroupSample = { timestampNs, cpuUsageNs: cpu, processCount: pids };
    if (memsw !== undefined && usage !== undefined) {
      // v1 counts memory+swap together: swap is the difference.
      const swapUsed = memsw > usage ? memsw - usage : 0n;
      sample.swap = { usageBytes: swapUsed };
      if (memswLimit !== undefined && limit !== undefined && memswLimit < UNLIMITED) {
        const swapLimit = memswLimit > limit ? memswLimit - limit : 0n;
        sample.swap.availableBytes = swapLimit > swapUsed ? swapLimit - swapUsed : 0n;
      }
    }
    if (usage !== undefined && statText !== undefined) {
      // total_* include child cgroups (a pod's containers); plain names are this cgroup only.
      sample.memory = memorySample(usage, parseFlatKeyed(statText), limit, {
        inactiveFile: ['total_inactive_file', 'inactive_file'],
        rss: ['total_rss', 'rss'],
        pgfault: ['total_pgfault', 'pgfault'],
        pgmajfault: ['total_pgmajfault', 'pgmajfault'],
      });
    }
    return sample;
  }
  const { text: cpuStat, timestampNs } = readCounterNow(join(dirs.dir, 'cpu.stat'));
  const [usage, statText, max, pids, swapCurrent, swapMax] = await Promise.all([
    readNumber(join(dirs.dir, 'memory.current')),
    readText(join(dirs.dir, 'memory.stat')),
    readText(join(dirs.dir, 'memory.max')),
    readNumber(join(dirs.dir, 'pids.current')),
    readNumber(join(dirs.dir, 'memory.swap.current')),
    readNumber(join(dirs.dir, 'memory.swap.max')),
  ]);
  const sample: CgroupSample = { timestampNs, processCount: pids };
  if (swapCurrent !== undefined) {
    sample.swap = { usageBytes: swapCurrent };
    // memory.swap.max reads "max" without a limit (readNumber: undefined).
    if (swapMax !== undefined)
      sample.swap.availableBytes = swapMax > swapCurrent ? swapMax - swapCurrent : 0n;
  }
  const usec = cpuStat === undefined ? undefined : parseFlatKeyed(cpuStat).get('usage_usec');
  if (usec !== undefined) sample.cpuUsageNs = usec * 1000n;
  if (usage !== undefined && statText !== undefined) {
    const limitText = max?.trim();
    sample.memory = memorySample(
      usage,
      parseFlatKeyed(statText),
      limitText && /^\d+$/.test(limitText) ? BigInt(limitText) : undefined,
      { inactiveFile: ['inactive_file'], rss: ['anon'], pgfault: ['pgfault'], pgmajfault: ['pgmajfault'] },
    );
  }
  return sample;
}

/**
 * Turns cumulative CPU time into a rate (nano-cores) from two samples of the
 * same cgroup: kept per key between calls; a first call samples twice.
 */
export class CpuRates {
  private readonly last = new Map<string, { timestampNs: bigint; usageNs: bigint }>();

  constructor(private readonly firstIntervalMs = 100) {}

  /**
   * The rate since the previous sample of `key`; when there is none (or it is
   * stale), waits `firstIntervalMs` and samples again through `resample`.
   * Returns the rate with the sample it ends at (report those together).
   */
  async rate(
    key: string,
    sample: CgroupSample,
    resample: () => Promise<CgroupSample>,
  ): Promise<{ nanoCores: bigint; timestampNs: bigint; usageNs: bigint } | undefined> {
    if (sample.cpuUsageNs === undefined) return undefined;
    let prev = this.last.get(key);
    let current = { timestampNs: sample.timestampNs, usageNs: sample.cpuUsageNs };
    const staleNs = 10n * 60n * 1_000_000_000n;
    if (!prev || current.timestampNs - prev.timestampNs > staleNs || current.usageNs < prev.usageNs) {
      prev = current;
      await new Promise((r) => setTimeout(r, this.firstIntervalMs));
      const again = await resample();
      if (again.cpuUsageNs === undefined) return undefined;
      current = { timestampNs: again.timestampNs, usageNs: again.cpuUsageNs };
    }
    this.last.set(key, current);
    const dt = current.timestampNs - prev.timestampNs;
    const nanoCores = dt <= 0n ? 0n : ((current.usageNs - prev.usageNs) * 1_000_000_000n) / dt;
    return { nanoCores, ...current };
  }

  forget(key: string): void {
    this.last.delete(key);
  }
}
