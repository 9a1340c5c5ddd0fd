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
 *    inside the same netns to the same server; reported as a ratio.
 *
 * Run by hand (not part of npm test), as root:
 *   npm run build && node dist/bench/stream/main.js [--execs 50] [--mib 256] [--runs 3]
 * Targets: exec round trip median <= 60 ms; port-forward >= 50% of direct loopback.
 */
import { spawn } from 'node:child_process';
import { connect } from 'node:net';
import { cpus, loadavg } from 'node:os';
import { parseArgs } from 'node:util';
import { StreamFixture } from '../../test/integration/stream-fixture.js';
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

/** One exec of `true` through the streaming server, as kubelet's client does it. */
async function execRoundTrip(fixture: StreamFixture, id: string): Promise<number> {
  const start = process.hrtime.bigint();
  const url = await fixture.server.exec({
    containerId: id,
    cmd: ['true'],
    tty: false,
    stdin: false,
    stdout: true,
    stderr: false,
  });
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
if (mode === 'down') { let n = 0; s.on('data', (c) => { n += c.length; }); s.on('end', done); }
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

/** The same transfer from this process to a local port (kubectl port-forward's). */
function forwardedMs(localPort: number, mode: 'up' | 'down'): Promise<number> {
  return new Promise((resolve, reject) => {
    const socket = connect(localPort, '127.0.0.1');
    const start = process.hrtime.bigint();
    let received = 0;
    socket.on('error', reject);
    socket.on('data', (c: Buffer) => (received += c.length));
    socket.on('end', () => {
      if (mode === 'down' && received !== BYTES) reject(new Error(`received ${received} of ${BYTES} bytes`));
      else resolve(msSince(start));
    });
    if (mode === 'up') {
      const chunk = Buffer.alloc(1 << 20, 1);
      let left = BYTES;
      const pump = () => {
        while (left > 0) {
          const n = Math.min(left, chunk.length);
          left -= n;
          if (!socket.write(chunk.subarray(0, n))) return void socket.once('drain', pump);
        }
        socket.end();
      };
      socket.on('connect', pump);
    }
  });
}

async function kubectlPortForward(fixture: StreamFixture, containerId: string, podId: string, port: number) {
  const shim = await fixture.shim([{ name: 'main', id: containerId }], podId);
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
    async stop() {
      child.kill('SIGKILL');
      await shim.close();
    },
  };
}

const mibps = (ms: number) => BYTES / 1024 / 1024 / (ms / 1000);

async function main(): Promise<void> {
  const fixture = new StreamFixture();
  await fixture.setup();
  try {
    const id = await fixture.container(['sleep', '100000']);
    console.log(`host: ${cpus().length} CPUs, load ${loadavg()[0].toFixed(2)}; node ${process.version}`);

    // Exec round trip, after two warm-up runs; the runc floor interleaved.
    for (let i = 0; i < 2; i++) await execRoundTrip(fixture, id);
    const exec: number[] = [];
    const floor: number[] = [];
    for (let i = 0; i < EXECS; i++) {
      exec.push(await execRoundTrip(fixture, id));
      const start = process.hrtime.bigint();
      const r = await run(fixture.handler.path, [`--root=${fixture.handler.root}`, 'exec', id, 'true']);
      if (r.code !== 0) throw new Error(`runc exec failed: ${r.stderr}`);
      floor.push(msSince(start));
    }
    console.log(`\nExec round trip (\`true\`, SPDY v4, ${EXECS} runs)`);
    console.log(
      table(
        ['path', 'median', 'p95'],
        [
          ['berth stream server', fmtMs(median(exec)), fmtMs(percentile(exec, 95))],
          ['bare runc exec', fmtMs(median(floor)), fmtMs(percentile(floor, 95))],
        ],
      ),
    );

    // Port-forward throughput.
    const progress = (what: string) => process.stderr.write(`bench: ${what}\n`);
    const netns = await fixture.podNetns('bench-pod', 9000);
    await fixture.serveInNetns(netns, SINK_PORT, 'sink');
    await fixture.serveInNetns(netns, SOURCE_PORT, `source:${BYTES}`);
    progress('servers up');
    const up = await kubectlPortForward(fixture, id, 'bench-pod', SINK_PORT);
    const down = await kubectlPortForward(fixture, id, 'bench-pod', SOURCE_PORT);
    const rows: string[][] = [];
    try {
      progress('port-forwards up');
      await forwardedMs(up.localPort, 'up');
      await forwardedMs(down.localPort, 'down');
      progress('warmed up');
      for (const mode of ['up', 'down'] as const) {
        const direct: number[] = [];
        const forwarded: number[] = [];
        for (let i = 0; i < RUNS; i++) {
          progress(`${mode} run ${i + 1}`);
          direct.push(await directMs(netns, mode, mode === 'up' ? SINK_PORT : SOURCE_PORT));
          forwarded.push(await forwardedMs(mode === 'up' ? up.localPort : down.localPort, mode));
        }
        const d = mibps(median(direct));
        const f = mibps(median(forwarded));
        rows.push([
          mode === 'up' ? 'client → pod' : 'pod → client',
          `${d.toFixed(0)} MiB/s`,
          `${f.toFixed(0)} MiB/s`,
          `${((100 * f) / d).toFixed(0)}%`,
        ]);
      }
    } finally {
      await up.stop();
      await down.stop();
    }
    console.log(
      `\nPort-forward throughput (${args.mib} MiB per transfer, median of ${RUNS}; kubectl port-forward over SPDY)`,
    );
    console.log(table(['direction', 'direct loopback', 'port-forward', 'ratio'], rows));
  } finally {
    await fixture.cleanup();
  }
}

await main();
