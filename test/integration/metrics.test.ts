/**
 * Prometheus metrics: served on server.metrics_address when it is set (the
 * metrics code loads only then): CRI calls by method and code, what pulls
 * fetched and reused, container exits by reason, containers and pods by state.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { request } from 'node:http';
import { startBerth } from '../helpers/berth-process.js';
import { startRegistry } from '../helpers/registry.js';
import { buildImage, file } from '../helpers/image-builder.js';
import { containerConfig, podConfig, startEnv, waitForState } from './container-fixture.js';
import { ContainerState, PullImageRequest } from '../../src/generated/api.js';

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

/** The value of one series in a scrape (0 when absent). */
function sample(body: string, series: string): number {
  const line = body.split('\n').find((l) => l.startsWith(`${series} `));
  return line ? Number(line.slice(series.length + 1)) : 0;
}

test('metrics count pulled bytes and layers by source, container exits by reason, containers and pods by state', async () => {
  const registry = await startRegistry({ mode: 'open' });
  const port = await freePort();
  const env = await startEnv('metrics', `[image.registries."${registry.host}"]\ninsecure = true\n`, [
    '--server.metrics_address',
    `127.0.0.1:${port}`,
  ]).catch(async (err: unknown) => {
    await registry.stop();
    throw err;
  });
  try {
    const scrape = async () => (await get(port, '/metrics')).body;
    const first = await scrape();
    for (const source of ['registry', 'shared', 'local'])
      assert.equal(sample(first, `berth_image_pull_layers_total{source="${source}"}`), 0, source);
    assert.match(first, /berth_container_exits_total\{reason="OOMKilled"\} 0/);

    // Two images on the busybox base layer, which the environment's import brought already:
    // each pull fetches its config and its own layer only.
    const a = await buildImage({ layers: [{ entries: [file('a', 'a')] }] });
    const b = await buildImage({ layers: [{ entries: [file('b', 'b')] }] });
    await registry.push('metrics/a', 'v1', a);
    await registry.push('metrics/b', 'v1', b);
    const pull = (repo: string) =>
      env.berth.cri.image.pullImage(
        PullImageRequest.fromPartial({ image: { image: `${registry.host}/${repo}:v1` } }),
      );
    const fetched = (image: typeof a) => image.config.length + image.layers[1].size;
    await pull('metrics/a');
    let body = await scrape();
    assert.equal(sample(body, 'berth_image_pull_layers_total{source="registry"}'), 1);
    assert.equal(sample(body, 'berth_image_pull_layers_total{source="local"}'), 1, 'the base layer');
    assert.equal(sample(body, 'berth_image_pull_bytes_total'), fetched(a));
    await pull('metrics/b');
    body = await scrape();
    assert.equal(sample(body, 'berth_image_pull_layers_total{source="registry"}'), 2);
    assert.equal(sample(body, 'berth_image_pull_layers_total{source="local"}'), 2);
    assert.equal(sample(body, 'berth_image_pull_bytes_total'), fetched(a) + fetched(b));
    // Two images on a new base layer, pulled at once: the base is fetched once, the other pull
    // takes it from that download (or, if it looks after the download ended, finds it here).
    const base = { entries: [file('base.bin', 'z'.repeat(4 << 20))] };
    const d = await buildImage({ base: false, layers: [base, { entries: [file('d', 'd')] }] });
    const e = await buildImage({ base: false, layers: [base, { entries: [file('e', 'e')] }] });
    assert.equal(d.layers[0].digest, e.layers[0].digest);
    await registry.push('metrics/d', 'v1', d);
    await registry.push('metrics/e', 'v1', e);
    await Promise.all([pull('metrics/d'), pull('metrics/e')]);
    body = await scrape();
    assert.equal(sample(body, 'berth_image_pull_layers_total{source="registry"}'), 5);
    assert.equal(
      sample(body, 'berth_image_pull_layers_total{source="shared"}') +
        sample(body, 'berth_image_pull_layers_total{source="local"}'),
      3,
    );

    // A container that fails, one that completes, one the kernel kills for memory.
    const rt = env.berth.cri.runtime;
    const config = podConfig(env.work, { hostNetwork: true });
    const { podSandboxId } = await rt.runPodSandbox({ config, runtimeHandler: '' });
    for (const [name, script, linux] of [
      ['fails', 'exit 3', {}],
      ['completes', 'exit 0', {}],
      ['oom', 'x=a; while true; do x="$x$x"; done', { resources: { memoryLimitInBytes: 16n << 20n } }],
    ] as const) {
      const { containerId } = await rt.createContainer({
        podSandboxId,
        sandboxConfig: config,
        config: containerConfig(name, { command: ['sh', '-c', script], linux }),
      });
      await rt.startContainer({ containerId });
      await waitForState(env.berth, containerId, (s) => s.state === ContainerState.CONTAINER_EXITED);
    }
    await rt.createContainer({
      podSandboxId,
      sandboxConfig: config,
      config: containerConfig('waits', { command: ['true'] }),
    });
    body = await scrape();
    assert.equal(sample(body, 'berth_container_exits_total{reason="Error"}'), 1);
    assert.equal(sample(body, 'berth_container_exits_total{reason="Completed"}'), 1);
    assert.equal(sample(body, 'berth_container_exits_total{reason="OOMKilled"}'), 1);
    assert.equal(sample(body, 'berth_containers{state="exited"}'), 3);
    assert.equal(sample(body, 'berth_containers{state="created"}'), 1);
    assert.equal(sample(body, 'berth_containers{state="running"}'), 0);
    assert.equal(sample(body, 'berth_pod_sandboxes{state="ready"}'), 1);
    await rt.stopPodSandbox({ podSandboxId });
    body = await scrape();
    assert.equal(sample(body, 'berth_pod_sandboxes{state="ready"}'), 0);
    assert.equal(sample(body, 'berth_pod_sandboxes{state="notready"}'), 1);
  } finally {
    await env.cleanup();
    await registry.stop();
  }
});
