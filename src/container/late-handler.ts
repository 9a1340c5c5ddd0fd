/**
 * A stop signal sent to a container's init before it has installed its
 * handler is dropped by the kernel (a PID namespace's init ignores signals
 * with the default disposition), and the container then only dies by
 * SIGKILL at the end of the grace period. kubelet rarely stops that fast,
 * but a StopContainer right after StartContainer does; so while the signal
 * was not caught when sent, watch the process and send it again once its
 * handler appears.
 */
import { readFile } from 'node:fs/promises';
import { constants } from 'node:os';

const WATCH_MS = 3_000;
const POLL_MS = 15;

export function signalNumber(name: string): number | undefined {
  const key = (name.startsWith('SIG') ? name : `SIG${name}`) as keyof typeof constants.signals;
  return constants.signals[key];
}

/** Whether pid catches signo (SigCgt in /proc/<pid>/status); undefined when the process is gone. */
export async function catchesSignal(pid: number, signo: number): Promise<boolean | undefined> {
  let status: string;
  try {
    status = await readFile(`/proc/${pid}/status`, 'utf8');
  } catch {
    return undefined;
  }
  const mask = /^SigCgt:\s*([0-9a-f]+)$/m.exec(status)?.[1];
  if (!mask) return undefined;
  return ((BigInt(`0x${mask}`) >> BigInt(signo - 1)) & 1n) === 1n;
}

/**
 * Call right after sending the signal: returns at once if pid already
 * catches it; otherwise re-sends through `resend` as soon as it does (once),
 * giving up after a few seconds or when `signal` aborts.
 */
export async function resendWhenCaught(
  pid: number,
  signo: number,
  resend: () => Promise<void>,
  signal: AbortSignal,
): Promise<void> {
  if (pid <= 0 || (await catchesSignal(pid, signo)) !== false) return;
  const deadline = Date.now() + WATCH_MS;
  while (!signal.aborted && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, POLL_MS));
    const caught = await catchesSignal(pid, signo);
    if (caught === undefined) return;
    if (caught) {
      if (!signal.aborted) await resend();
      return;
    }
  }
}
