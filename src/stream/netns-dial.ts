/**
 * A TCP connection to 127.0.0.1:PORT inside a pod's network namespace. Node
 * cannot setns, so each forwarded connection runs `nsenter --net=NS socat`
 * which connects inside the namespace and relays over its stdio. socat waits
 * for both directions to end (-t, set to the idle timeout) so half-closed
 * transfers finish; -b is its buffer (fewer, larger reads and writes).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import type { Readable, Writable } from 'node:stream';

export const NSENTER_PATH = '/usr/bin/nsenter';
export const SOCAT_PATH = '/usr/bin/socat';

export interface NetnsConnection {
  /** Bytes to the port. End it to half-close. */
  input: Writable;
  /** Bytes from the port; ends when the port's side closes. */
  output: Readable;
  /** Resolves with null once the relay ends cleanly, else with the reason it failed. */
  done: Promise<string | null>;
  kill(): void;
}

export function dialInNetns(netnsPath: string, port: number, halfCloseSeconds: number): NetnsConnection {
  const child: ChildProcess = spawn(
    NSENTER_PATH,
    [
      `--net=${netnsPath}`,
      '--',
      SOCAT_PATH,
      '-b',
      '131072',
      '-t',
      String(Math.max(1, halfCloseSeconds)),
      '-',
      `TCP4:127.0.0.1:${port}`,
    ],
    { stdio: ['pipe', 'pipe', 'pipe'] },
  );
  child.stdin!.on('error', () => undefined);
  child.stdout!.on('error', () => undefined);
  let diagnostics = '';
  child.stderr!.on('data', (chunk: Buffer) => {
    if (diagnostics.length < 4096) diagnostics += chunk.toString();
  });
  const done = new Promise<string | null>((resolve) => {
    child.once('error', (err) => resolve(`cannot run ${NSENTER_PATH}: ${err.message}`));
    child.once('close', (code, signal) => {
      if (code === 0) return resolve(null);
      // socat's messages look like "2026/… socat[123] E connect(5, …): Connection refused".
      const reason = /\bE (.*)$/m.exec(diagnostics)?.[1] ?? diagnostics.trim();
      resolve(reason || (signal ? `relay killed by ${signal}` : `relay exited with ${code}`));
    });
  });
  return {
    input: child.stdin!,
    output: child.stdout!,
    done,
    kill() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    },
  };
}
