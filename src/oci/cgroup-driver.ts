import { access } from 'node:fs/promises';

/** systemd is the driver when systemd is PID 1 (its runtime dir marks that). */
export async function detectCgroupDriver(): Promise<'cgroupfs' | 'systemd'> {
  try {
    await access('/run/systemd/system');
    return 'systemd';
  } catch {
    return 'cgroupfs';
  }
}
