/**
 * A host-noise probe: a separate, otherwise idle Node process whose 1 ms
 * timer records how late it fires. A latency outlier of the process under
 * test that the probe saw at the same moment is the host's (CPU contention,
 * the hypervisor), not the daemon's.
 */
import { spawn } from 'node:child_process';

const PROBE = `
let last = performance.now();
const lags = [];
const timer = setInterval(() => {
  const now = performance.now();
  lags.push(now - last - 1);
  last = now;
}, 1);
process.stdin.once('data', () => {
  clearInterval(timer);
  process.stdout.write(JSON.stringify(lags));
});
process.stdin.resume();
`;

export interface StallReport {
  /** Probe intervals at least this late (ms). */
  thresholdMs: number;
  stalls: number;
  worstMs: number;
}

/** Starts the probe; stop() ends it and reports the late ticks it saw. */
export async function startStallProbe(thresholdMs = 4): Promise<{ stop(): Promise<StallReport> }> {
  const child = spawn(process.execPath, ['-e', PROBE], { stdio: ['pipe', 'pipe', 'inherit'] });
  let output = '';
  child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  // Let it start and settle before the measured window.
  await new Promise((resolve) => setTimeout(resolve, 300));
  return {
    async stop() {
      child.stdin.end('stop\n');
      await exited;
      const lags = JSON.parse(output || '[]') as number[];
      const late = lags.filter((lag) => lag >= thresholdMs);
      return { thresholdMs, stalls: late.length, worstMs: Math.max(0, ...lags) };
    },
  };
}
