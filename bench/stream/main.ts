/**
 * bench/stream: berth's streaming server on real containers (conmon + runc)
 * and a real network namespace.
 *
 *  - Exec round trip: URL from the server (what the Exec RPC returns), SPDY
 *    upgrade, error and stdout streams, `true` in a running container, until
 *    the exit status has arrived; median and p95. Beside it the floor: a bare
 *    `runc exec CONTAINER true`.
 *  - Port-forward throughput: a TCP server in a pod netns sinks (upload) or
 *    sources (download) N MiB. Through `kubectl port-forward` (SPDY; kubectl
 *    is the client users run) against a direct loopback connection made from
 *    inside the same netns to the same server; reported as a ratio. The
 *    client is the same small Node program in both cases, in its own process;
 *    berth's streaming server runs in a child process of its own.
 *
 * Run by hand (not part of npm test), as root:
 *   npm run build && node dist/bench/stream/main.js [--execs 50] [--mib 256] [--runs 3]
 * Targets: exec round trip median <= 60 ms; port-forward >= 50% of direct loopback.
 */
import { spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { cpus, loadavg } from 'node:os';
import { parseArgs } from 'node:util';
import { fork } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startKubeShim } from '../../test/helpers/kube-shim.js';
import type { Request, SetupReply } from './server-child.js';
import { DAEMON_START_UP_FLAGS } from '../../src/cli/v8-flags.js';
import { spdyUpgrade, readText } from '../../src/stream/spdy/client.js';
import { run } from '../../src/util/run.js';
import { fmtMs, median, msSince, percentile, table } from '../lib/stats.js';

const { values: args } = parseArgs({
  options: {
    execs: { type: 'string', default: '50' },
    mib: { type: 'string', default: '256' },
    runs: { type: 'string', default: '3' },
  },
});
const EXECS = Number(args.execs);
const BYTES = Number(args.mib) * 1024 * 1024;
const RUNS = Number(args.runs);

const SINK_PORT = 9001;
const SOURCE_PORT = 9002;

/** The streaming server in a child process, called over IPC. */
class ServerProcess {
  private readonly child = fork(join(dirname(fileURLToPath(import.meta.url)), 'server-child.js'), [], {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    execArgv: [...DAEMON_START_UP_FLAGS], // compiled like the daemon
  });
  private next = 0;
  private readonly waiting = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  readonly ready: Promise<void>;

  constructor() {
    this.ready = new Promise((resolve) => {
      this.child.on('message', (m: { ready?: boolean; id?: number; value?: unknown; error?: string }) => {
        if (m.ready) return resolve();
        const w = this.waiting.get(m.id!);
        this.waiting.delete(m.id!);
        if (m.error !== undefined) w?.reject(new Error(m.error));
        else w?.resolve(m.value);
      });
    });
  }

  call<T>(request: Request): Promise<T> {
    const id = this.next++;
    return new Promise((resolve, reject) => {
      this.waiting.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.child.send({ id, request });
    });
  }

  stop(): void {
    this.child.disconnect();
  }
}

/** One exec of `true`: URL (what the Exec RPC returns), SPDY upgrade, streams, exit status. */
async function execRoundTrip(server: ServerProcess): Promise<number> {
  const start = process.hrtime.bigint();
  const url = await server.call<string>({ op: 'exec-url' });
  const up = await spdyUpgrade(url, ['v4.channel.k8s.io']);
  if (!up.conn) throw new Error(`upgrade refused: ${up.head}`);
  const [error, stdout] = await Promise.all([
    up.conn.openStream({ streamType: 'error' }),
    up.conn.openStream({ streamType: 'stdout' }),
  ]);
  error.end();
  stdout.end();
  const [status] = await Promise.all([readText(error), readText(stdout)]);
  const ms = msSince(start);
  if (!status.includes('"Success"')) throw new Error(`exec failed: ${status}`);
  up.conn.destroy();
  return ms;
}

/** A client inside the netns (direct loopback): mode 'up' sends BYTES to the sink, 'down' reads from the source. */
const DIRECT_CLIENT = `
const net = require('node:net');
const [mode, port, bytes] = [process.argv[1], Number(process.argv[2]), Number(process.argv[3])];
const s = net.connect(port, '127.0.0.1');
const start = process.hrtime.bigint();
const done = () => process.stdout.write(String(Number(process.hrtime.bigint() - start) / 1e6));
if (mode === 'down') { let n = 0; s.on('data', (c) => { n += c.length; }); s.on('end', () => { if (n !== bytes) { console.error('received ' + n + ' of ' + bytes); process.exit(1); } done(); }); }
else {
  const chunk = Buffer.alloc(1 << 20, 1); let left = bytes;
  s.on('data', () => {}); s.on('end', done);
  const pump = () => { while (left > 0) { const n = Math.min(left, chunk.length); left -= n; if (!s.write(chunk.subarray(0, n))) return s.once('drain', pump); } s.end(); };
  s.on('connect', pump);
}`;

async function directMs(netns: string, mode: 'up' | 'down', port: number): Promise<number> {
  const r = await run('/usr/bin/nsenter', [
    `--net=${netns}`,
    '--',
    process.execPath,
    '-e',
    DIRECT_CLIENT,
    mode,
    String(port),
    String(BYTES),
  ]);
  if (r.code !== 0) throw new Error(`direct client failed: ${r.stderr}`);
  return Number(r.stdout);
}

/** The same client, in its own process on the host, to kubectl's local port. */
async function forwardedMs(localPort: number, mode: 'up' | 'down'): Promise<number> {
  const r = await run(process.execPath, ['-e', DIRECT_CLIENT, mode, String(localPort), String(BYTES)]);
  if (r.code !== 0) throw new Error(`client failed: ${r.stderr}`);
  return Number(r.stdout);
}

async function kubectlPortForward(server: ServerProcess, port: number) {
  const shim = await startKubeShim({
    podName: 'pod1',
    containers: [{ name: 'main' }],
    streamUrl: () => server.call<string>({ op: 'pf-url' }),
  });
  const child = spawn('/usr/bin/kubectl', ['port-forward', 'pod1', `:${port}`], {
    env: shim.env({ KUBECTL_PORT_FORWARD_WEBSOCKETS: 'false' }),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const localPort = await new Promise<number>((resolve, reject) => {
    child.stdout.on('data', (chunk: Buffer) => {
      const m = /127\.0\.0\.1:(\d+)/.exec(chunk.toString());
      if (m) resolve(Number(m[1]));
    });
    child.once('exit', (code) => reject(new Error(`kubectl port-forward exited with ${code}`)));
  });
  return {
    localPort,
    pid: child.pid!,
    async stop() {
      child.kill('SIGKILL');
      await shim.close();
    },
  };
}

const mibps = (ms: number) => BYTES / 1024 / 1024 / (ms / 1000);

/** utime + stime of a process in ms, from /proc/PID/stat (clock ticks of 10 ms). */
async function procCpuMs(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

async function main(): Promise<void> {
  const server = new ServerProcess();
  await server.ready;
  const progress = (what: string) => process.stderr.write(`bench: ${what}\n`);
  try {
    const setup = await server.call<SetupReply>({
      op: 'setup',
      sinkPort: SINK_PORT,
      sourcePort: SOURCE_PORT,
      sourceBytes: BYTES,
    });
    console.log(`host: ${cpus().length} CPUs, load ${loadavg()[0].toFixed(2)}; node ${process.version}`);

    // Exec round trip, after two warm-up runs; the runc floor interleaved.
    for (let i = 0; i < 2; i++) await execRoundTrip(server);
    const exec: number[] = [];
    const floor: number[] = [];
    const state: number[] = [];
    for (let i = 0; i < EXECS; i++) {
      exec.push(await execRoundTrip(server));
      const start = process.hrtime.bigint();
      const r = await run(setup.runtime, [`--root=${setup.runtimeRoot}`, 'exec', setup.containerId, 'true']);
      if (r.code !== 0) throw new Error(`runc exec failed: ${r.stderr}`);
      floor.push(msSince(start));
      // berth's exec asks the runtime for the container's state first.
      const stateStart = process.hrtime.bigint();
      const st = await run(setup.runtime, [`--root=${setup.runtimeRoot}`, 'state', setup.containerId]);
      if (st.code !== 0) throw new Error(`runc state failed: ${st.stderr}`);
      state.push(msSince(stateStart));
    }
    console.log(`\nExec round trip (\`true\`, SPDY v4, ${EXECS} runs)`);
    console.log(
      table(
        ['path', 'median', 'p95'],
        [
          ['berth stream server', fmtMs(median(exec)), fmtMs(percentile(exec, 95))],
          ['bare runc exec', fmtMs(median(floor)), fmtMs(percentile(floor, 95))],
          ['bare runc state', fmtMs(median(state)), fmtMs(percentile(state, 95))],
        ],
      ),
    );

    // Port-forward throughput.
    progress('servers up');
    const up = await kubectlPortForward(server, SINK_PORT);
    const down = await kubectlPortForward(server, SOURCE_PORT);
    const rows: string[][] = [];
    const berthCpu: number[] = [];
    const kubectlCpu: number[] = [];
    try {
      progress('port-forwards up');
      await forwardedMs(up.localPort, 'up');
      await forwardedMs(down.localPort, 'down');
      progress('warmed up');
      for (const mode of ['up', 'down'] as const) {
        const direct: number[] = [];
        const forwarded: number[] = [];
        const pf = mode === 'up' ? up : down;
        for (let i = 0; i < RUNS; i++) {
          progress(`${mode} run ${i + 1}`);
          direct.push(await directMs(setup.netnsPath, mode, mode === 'up' ? SINK_PORT : SOURCE_PORT));
          const berthBefore = await server.call<number>({ op: 'cpu' });
          const kubectlBefore = await procCpuMs(pf.pid);
          forwarded.push(await forwardedMs(pf.localPort, mode));
          berthCpu.push((await server.call<number>({ op: 'cpu' })) - berthBefore);
          kubectlCpu.push((await procCpuMs(pf.pid)) - kubectlBefore);
        }
        const d = mibps(median(direct));
        const f = mibps(median(forwarded));
        rows.push([
          mode === 'up' ? 'client → pod' : 'pod → client',
          `${d.toFixed(0)} MiB/s`,
          `${f.toFixed(0)} MiB/s`,
          `${((100 * f) / d).toFixed(0)}%`,
          `${(median(berthCpu) / 1000).toFixed(2)} s`,
          `${(median(kubectlCpu) / 1000).toFixed(2)} s`,
        ]);
        berthCpu.length = 0;
        kubectlCpu.length = 0;
      }
    } finally {
      await up.stop();
      await down.stop();
    }
    console.log(
      `\nPort-forward throughput (${args.mib} MiB per transfer, median of ${RUNS}; kubectl port-forward over SPDY)`,
    );
    console.log(
      table(['direction', 'direct loopback', 'port-forward', 'ratio', 'berth CPU', 'kubectl CPU'], rows),
    );
  } finally {
    await server.call({ op: 'cleanup' }).catch(() => undefined);
    server.stop();
  }
}

await main();
