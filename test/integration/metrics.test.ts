/**
 * Prometheus metrics: served on server.metrics_address when it is set (the
 * metrics code loads only then), and counting CRI calls by method and code.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { request } from 'node:http';
import { startBerth } from '../helpers/berth-process.js';

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

function get(port: number, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path }, (res) => {
      let body = '';
      res.on('data', (chunk: Buffer) => (body += chunk.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

test('metrics_address serves berth_rpc_total and process metrics; other paths are 404', async () => {
  const port = await freePort();
  const berth = await startBerth({ args: ['--server.metrics_address', `127.0.0.1:${port}`] });
  try {
    await berth.cri.runtime.version({ version: '' });
    await berth.cri.runtime.version({ version: '' });
    const metrics = await get(port, '/metrics');
    assert.equal(metrics.status, 200);
    assert.match(metrics.body, /berth_rpc_total\{rpc="[^"]*Version",code="OK"\} 2/);
    assert.match(metrics.body, /berth_rpc_duration_seconds_bucket/);
    assert.match(metrics.body, /berth_process_resident_memory_bytes/);
    assert.equal((await get(port, '/other')).status, 404);
  } finally {
    await berth.cleanup();
  }
});
