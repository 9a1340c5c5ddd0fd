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
