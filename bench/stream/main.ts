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
 *  - When Debian's containerd is installed, the same exec and port-forward
 *    measurements against containerd 1.6's streaming server (a pod of its own,
 *    URLs from its Exec and PortForward RPCs), interleaved with berth's.
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
import { spdyUpgrade } from '../../src/stream/spdy/client.js';
import type { SpdyStream } from '../../src/stream/spdy/connection.js';
import { containerdInstalled } from '../lib/containerd.js';
import { startContainerdPeer, type ContainerdPeer } from './containerd-peer.js';
import { run } from '../../src/util/run.js';
import { fmtMs, median, msSince, percentile, table } from '../lib/stats.js';

const { values: args } = parseArgs({
  options: {
    execs: { type: 'string', default: '50' },
    mib: { type: 'string', default: '256' },
    runs: { type: 'string', default: '3' },
    /** Comma-separated: berth, containerd (only when installed). */
    targets: { type: 'string', default: 'berth,containerd' },
  },
});
const EXECS = Number(args.execs);
const BYTES = Number(args.mib) * 1024 * 1024;
const RUNS = Number(args.runs);

const SINK_PORT = 9001;
const SOURCE_PORT = 9002;
const SPDY_CLIENT = join(dirname(fileURLToPath(import.meta.url)), 'spdy-forward-client.js');

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

/** A stream's bytes as text, until it ends or closes (containerd's server closes without FIN). */
function readUntilClosed(stream: SpdyStream): Promise<string> {
  return new Promise((resolve) => {
    let text = '';
    stream.on('data', (chunk: Buffer) => (text += chunk.toString()));
    stream.on('error', () => undefined);
    stream.once('end', () => resolve(text));
    stream.once('close', () => resolve(text));
  });
}

/** One exec of `true`: URL (what the Exec RPC returns), SPDY upgrade, streams, exit status. */
async function execRoundTrip(target: StreamTarget): Promise<number> {
  const start = process.hrtime.bigint();
  const url = await target.execUrl();
  const up = await spdyUpgrade(url, ['v4.channel.k8s.io']);
  if (!up.conn) throw new Error(`${target.name}: upgrade refused: ${up.head}`);
  const [error, stdout] = await Promise.all([
    up.conn.openStream({ streamType: 'error' }),
    up.conn.openStream({ streamType: 'stdout' }),
  ]);
  error.end();
  stdout.end();
  const [status] = await Promise.all([readUntilClosed(error), readUntilClosed(stdout)]);
  const ms = msSince(start);
  if (!status.includes('"Success"')) throw new Error(`${target.name}: exec failed: ${status}`);
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

/** The same transfer through berth's own SPDY client straight to a fresh port-forward URL (no kubectl). */
async function spdyClientMs(target: StreamTarget, mode: 'up' | 'down'): Promise<number> {
  const url = await target.portForwardUrl();
  const port = mode === 'up' ? SINK_PORT : SOURCE_PORT;
  const r = await run(process.execPath, [SPDY_CLIENT, url, String(port), mode, String(BYTES)]);
  if (r.code !== 0) throw new Error(`SPDY client failed: ${r.stderr}`);
  return Number(r.stdout);
}

async function kubectlPortForward(target: StreamTarget, port: number) {
  const shim = await startKubeShim({
    podName: 'pod1',
    containers: [{ name: 'main' }],
    streamUrl: () => target.portForwardUrl(),
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

/** A streaming server under test: where its URLs come from and what its CPU time is. */
interface StreamTarget {
  name: string;
  execUrl(): Promise<string>;
  portForwardUrl(): Promise<string>;
  /** The pod network namespace holding the sink and source servers. */
  netnsPath: string;
  /** CPU ms the server has used so far. */
  cpuMs(): Promise<number>;
}

interface TransferRow {
  target: string;
  mode: 'up' | 'down';
  direct: number;
  forwarded: number;
  serverCpuS: number;
  kubectlCpuS: number;
  /** Throughput through berth's own SPDY client (no kubectl in the path). */
  spdyClient: number;
}

/** Median throughput both ways through kubectl port-forward against the target, and direct. */
async function measurePortForward(
  target: StreamTarget,
  progress: (what: string) => void,
): Promise<TransferRow[]> {
  const up = await kubectlPortForward(target, SINK_PORT);
  const down = await kubectlPortForward(target, SOURCE_PORT);
  const rows: TransferRow[] = [];
  try {
    await forwardedMs(up.localPort, 'up');
    await forwardedMs(down.localPort, 'down');
    for (const mode of ['up', 'down'] as const) {
      const direct: number[] = [];
      const forwarded: number[] = [];
      const serverCpu: number[] = [];
      const kubectlCpu: number[] = [];
      const spdyClient: number[] = [];
      const pf = mode === 'up' ? up : down;
      for (let i = 0; i < RUNS; i++) {
        progress(`${target.name} ${mode} run ${i + 1}`);
        direct.push(await directMs(target.netnsPath, mode, mode === 'up' ? SINK_PORT : SOURCE_PORT));
        const serverBefore = await target.cpuMs();
        const kubectlBefore = await procCpuMs(pf.pid);
        forwarded.push(await forwardedMs(pf.localPort, mode));
        serverCpu.push((await target.cpuMs()) - serverBefore);
        kubectlCpu.push((await procCpuMs(pf.pid)) - kubectlBefore);
        spdyClient.push(await spdyClientMs(target, mode));
      }
      rows.push({
        target: target.name,
        mode,
        direct: mibps(median(direct)),
        forwarded: mibps(median(forwarded)),
        serverCpuS: median(serverCpu) / 1000,
        kubectlCpuS: median(kubectlCpu) / 1000,
        spdyClient: mibps(median(spdyClient)),
      });
    }
  } finally {
    await up.stop();
    await down.stop();
  }
  return rows;
}

async function main(): Promise<void> {
  const wanted = new Set(args.targets.split(','));
  const progress = (what: string) => process.stderr.write(`bench: ${what}\n`);
  const server = new ServerProcess();
  await server.ready;
  let peer: ContainerdPeer | undefined;
  try {
    const setup = await server.call<SetupReply>({
      op: 'setup',
      sinkPort: SINK_PORT,
      sourcePort: SOURCE_PORT,
      sourceBytes: BYTES,
    });
    const targets: StreamTarget[] = [];
    if (wanted.has('berth')) {
      targets.push({
        name: 'berth',
        execUrl: () => server.call<string>({ op: 'exec-url' }),
        portForwardUrl: () => server.call<string>({ op: 'pf-url' }),
        netnsPath: setup.netnsPath,
        cpuMs: () => server.call<number>({ op: 'cpu' }),
      });
    }
    if (wanted.has('containerd') && containerdInstalled()) {
      progress('starting containerd');
      peer = await startContainerdPeer({ sinkPort: SINK_PORT, sourcePort: SOURCE_PORT, sourceBytes: BYTES });
      const { pid } = peer;
      targets.push({
        name: 'containerd',
        execUrl: peer.execUrl,
        portForwardUrl: peer.portForwardUrl,
        netnsPath: peer.netnsPath,
        cpuMs: () => procCpuMs(pid),
      });
    } else if (wanted.has('containerd')) {
      console.log('containerd not installed (apt-get install containerd): berth measured alone');
    }
    console.log(`host: ${cpus().length} CPUs, load ${loadavg()[0].toFixed(2)}; node ${process.version}`);

    // Exec round trips, after two warm-up runs each; the targets and the runc floor interleaved.
    for (const target of targets) for (let i = 0; i < 2; i++) await execRoundTrip(target);
    const exec = new Map<string, number[]>(targets.map((t) => [t.name, []]));
    const floor: number[] = [];
    const state: number[] = [];
    for (let i = 0; i < EXECS; i++) {
      for (const target of targets) exec.get(target.name)!.push(await execRoundTrip(target));
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
          ...targets.map((t) => {
            const times = exec.get(t.name)!;
            return [`${t.name} stream server`, fmtMs(median(times)), fmtMs(percentile(times, 95))];
          }),
          ['bare runc exec', fmtMs(median(floor)), fmtMs(percentile(floor, 95))],
          ['bare runc state', fmtMs(median(state)), fmtMs(percentile(state, 95))],
        ],
      ),
    );

    progress('servers up');
    const rows: TransferRow[] = [];
    for (const target of targets) rows.push(...(await measurePortForward(target, progress)));
    console.log(
      `\nPort-forward throughput (${args.mib} MiB per transfer, median of ${RUNS}; kubectl port-forward over SPDY)`,
    );
    console.log(
      table(
        [
          'server',
          'direction',
          'direct loopback',
          'port-forward',
          'ratio',
          'server CPU',
          'kubectl CPU',
          'SPDY client, no kubectl',
        ],
        rows.map((row) => [
          row.target,
          row.mode === 'up' ? 'client → pod' : 'pod → client',
          `${row.direct.toFixed(0)} MiB/s`,
          `${row.forwarded.toFixed(0)} MiB/s`,
          `${((100 * row.forwarded) / row.direct).toFixed(0)}%`,
          `${row.serverCpuS.toFixed(2)} s`,
          `${row.kubectlCpuS.toFixed(2)} s`,
          `${row.spdyClient.toFixed(0)} MiB/s (${((100 * row.spdyClient) / row.direct).toFixed(0)}%)`,
        ]),
      ),
    );
  } finally {
    await peer?.stop().catch((err: unknown) => console.error(`containerd clean-up failed: ${String(err)}`));
    await server.call({ op: 'cleanup' }).catch(() => undefined);
    server.stop();
  }
}

await main();
