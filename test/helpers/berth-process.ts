import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, mkdir, writeFile, rm } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { connectCri, type CriClients } from './cri-client.js';
import { socketInUse } from '../../src/server/socket.js';

/** dist/src/cli/main.js, resolved from this compiled helper's location. */
export const BERTH_MAIN = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'src', 'cli', 'main.js');

export interface BerthOptions {
  /** Extra TOML appended to the generated config. */
  toml?: string;
  /** Extra command-line flags. */
  args?: string[];
  /** Reuse a directory (to restart berth over the same state). */
  dir?: string;
  /** Environment variables besides this process's. */
  env?: Record<string, string>;
}

export interface RunningBerth {
  dir: string;
  socket: string;
  configFile: string;
  process: ChildProcess;
  cri: CriClients;
  logs(): string;
  /** SIGTERM and wait for exit; returns the exit code. */
  stop(): Promise<number | null>;
  /** SIGKILL, for crash tests. */
  kill(): Promise<void>;
  /** Stops berth and removes its directory. */
  cleanup(): Promise<void>;
}

async function waitFor(check: () => Promise<boolean>, timeoutMs: number, what: string, logs: () => string) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out waiting for ${what}; berth logs:\n${logs()}`);
}

/**
 * Starts a real berth daemon (the compiled CLI) with its own root, run_root
 * and socket under a temp dir, and connects CRI clients to it.
 */
export async function startBerth(options: BerthOptions = {}): Promise<RunningBerth> {
  const dir = options.dir ?? (await mkdtemp(join(tmpdir(), 'berth-test-')));
  const socket = join(dir, 'run', 'berth.sock');
  const configFile = join(dir, 'berth.toml');
  await mkdir(join(dir, 'cni'), { recursive: true });
  const base = `root = "${join(dir, 'root')}"
run_root = "${join(dir, 'run')}"
log_level = "debug"

[server]
socket = "${socket}"

[network]
cni_conf_dir = "${join(dir, 'cni')}"
`;
  await writeFile(configFile, base + (options.toml ?? ''));
  let output = '';
  const child = spawn(
    process.execPath,
    [BERTH_MAIN, 'serve', '--config', configFile, ...(options.args ?? [])],
    {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, ...options.env },
    },
  );
  child.stdout!.on('data', (d: Buffer) => (output += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (output += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  let dead = false;
  void exited.then(() => (dead = true));
  await waitFor(
    async () => {
      if (dead) throw new Error(`berth exited during start-up:\n${output}`);
      return existsSync(socket) && (await socketInUse(socket));
    },
    30_000,
    'berth socket',
    () => output,
  );
  const cri = connectCri(socket);
  const running: RunningBerth = {
    dir,
    socket,
    configFile,
    process: child,
    cri,
    logs: () => output,
    async stop() {
      cri.close();
      if (!dead) child.kill('SIGTERM');
      return exited;
    },
    async kill() {
      cri.close();
      if (!dead) child.kill('SIGKILL');
      await exited;
    },
    async cleanup() {
      await running.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
  return running;
}
