/** Process facts from /proc used by the benchmarks (RSS of a daemon and its monitors). */
import { readFile, readdir } from 'node:fs/promises';

/** Resident set size in bytes, or NaN when the process is gone. */
export async function rssBytes(pid: number): Promise<number> {
  try {
    const status = await readFile(`/proc/${pid}/status`, 'utf8');
    const match = /^VmRSS:\s+(\d+)\s+kB$/m.exec(status);
    return match ? Number(match[1]) * 1024 : Number.NaN;
  } catch {
    return Number.NaN;
  }
}

/** Pids whose executable name (comm) is `name`. */
export async function pidsByName(name: string): Promise<number[]> {
  const pids: number[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const comm = (await readFile(`/proc/${entry}/comm`, 'utf8')).trim();
      if (comm === name) pids.push(Number(entry));
    } catch {
      // Raced with the process exiting.
    }
  }
  return pids;
}

/** Samples a process's RSS every `intervalMs` until stopped; returns the peak. */
export function rssSampler(pid: number, intervalMs = 20): { stop(): number } {
  let peak = 0;
  const timer = setInterval(() => {
    void rssBytes(pid).then((rss) => {
      if (rss > peak) peak = rss;
    });
  }, intervalMs);
  return {
    stop() {
      clearInterval(timer);
      return peak;
    },
  };
}

/**
 * CPU milliseconds per kind of thread of a process (thread names without
 * their trailing number: `MainThread`, `WorkerThread`, `V8Worker` for V8's
 * compiler and GC helpers, `libuv-worker` for the thread pool).
 */
export async function threadCpuMs(pid: number): Promise<Map<string, number>> {
  const byKind = new Map<string, number>();
  for (const tid of await readdir(`/proc/${pid}/task`)) {
    try {
      const stat = await readFile(`/proc/${pid}/task/${tid}/stat`, 'utf8');
      const name = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')')).replace(/\d+$/, '');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      const ms = (Number(fields[11]) + Number(fields[12])) * 10; // USER_HZ is 100
      byKind.set(name, (byKind.get(name) ?? 0) + ms);
    } catch {
      // The thread ended meanwhile.
    }
  }
  return byKind;
}

/** What each kind of thread spent between two threadCpuMs() readings, busiest first. */
export function threadCpuDelta(before: Map<string, number>, after: Map<string, number>): [string, number][] {
  return [...after]
    .map(([kind, ms]): [string, number] => [kind, ms - (before.get(kind) ?? 0)])
    .filter(([, ms]) => ms > 0)
    .sort((a, b) => b[1] - a[1]);
}
