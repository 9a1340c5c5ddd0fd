/**
 * A port-forward client without kubectl: berth's own SPDY/3.1 client speaks
 * portforward.k8s.io straight to a stream URL (one data/error stream pair,
 * as kubectl opens per connection) and moves BYTES up (to the pod) or down.
 * Run as its own process so that it shares no event loop with the bench.
 *
 *   node spdy-forward-client.js URL PORT up|down BYTES   → prints the ms taken
 */
import { spdyUpgrade } from '../../src/stream/spdy/client.js';

const [url, portArg, mode, bytesArg] = process.argv.slice(2);
const bytes = Number(bytesArg);
if (!url || !portArg || (mode !== 'up' && mode !== 'down') || !Number.isInteger(bytes)) {
  console.error('usage: spdy-forward-client URL PORT up|down BYTES');
  process.exit(2);
}
const upgrade = await spdyUpgrade(url, ['portforward.k8s.io']);
if (!upgrade.conn) {
  console.error(`upgrade refused: ${upgrade.head}`);
  process.exit(1);
}
const conn = upgrade.conn;
const start = process.hrtime.bigint();
const headers = { port: portArg, requestID: '0' };
const error = await conn.openStream({ ...headers, streamType: 'error' });
const data = await conn.openStream({ ...headers, streamType: 'data' });
error.end();
let problem = '';
error.on('data', (chunk: Buffer) => (problem += chunk.toString()));
const finished = new Promise<void>((resolve, reject) => {
  let received = 0;
  data.on('data', (chunk: Buffer) => (received += chunk.length));
  data.once('end', () => {
    if (mode === 'down' && received !== bytes)
      reject(new Error(`received ${received} of ${bytes} ${problem}`));
    else resolve();
  });
  data.once('error', reject);
});
if (mode === 'up') {
  const chunk = Buffer.alloc(1 << 20, 1);
  let left = bytes;
  await new Promise<void>((resolve) => {
    const pump = () => {
      while (left > 0) {
        const n = Math.min(left, chunk.length);
        left -= n;
        if (!data.write(chunk.subarray(0, n))) return void data.once('drain', pump);
      }
      data.end();
      resolve();
    };
    pump();
  });
} else {
  data.end();
}
// Up: the sink closes once it has read everything, which ends the data stream here.
await finished;
process.stdout.write(String(Number(process.hrtime.bigint() - start) / 1e6));
if (problem) console.error(problem);
conn.destroy();
