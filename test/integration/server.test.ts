import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFile, readdir, stat } from 'node:fs/promises';
import { status } from '@grpc/grpc-js';
import { startBerth, BERTH_MAIN, type RunningBerth } from '../helpers/berth-process.js';
import { CgroupDriver } from '../../src/generated/api.js';

let berth: RunningBerth;
before(async () => {
  berth = await startBerth();
});
after(async () => {
  await berth.cleanup();
});

/** Names of the processes whose parent is pid. */
async function childNames(pid: number): Promise<string[]> {
  const names: string[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = await readFile(`/proc/${entry}/stat`, 'utf8').catch(() => '');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (Number(fields[1]) === pid) names.push(stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')')));
  }
  return names;
}

// First in this file: nothing has made berth run a program yet.
test('the process helper is started with the daemon, before any program runs', async () => {
  assert.ok((await childNames(berth.process.pid!)).includes('berth-spawn'));
});

test('Version names berth and the v1 API', async () => {
  const res = await berth.cri.runtime.version({ version: '' });
  assert.equal(res.runtimeName, 'berth');
  assert.equal(res.runtimeApiVersion, 'v1');
  assert.equal(res.version, '0.1.0');
  assert.match(res.runtimeVersion, /^\d+\.\d+\.\d+/);
});

test('socket is mode 0660', async () => {
  const info = await stat(berth.socket);
  assert.equal(info.mode & 0o777, 0o660);
});

test('Status: runtime ready, network not ready without CNI config', async () => {
  const res = await berth.cri.runtime.status({ verbose: true });
  const runtime = res.status!.conditions.find((c) => c.type === 'RuntimeReady');
  const network = res.status!.conditions.find((c) => c.type === 'NetworkReady');
  assert.equal(runtime?.status, true);
  assert.equal(network?.status, false);
  assert.equal(network?.reason, 'NetworkPluginNotReady');
  assert.match(network!.message, /no CNI network config/);
  assert.match(res.info.config, /\[server\]/);
});

test('RuntimeConfig reports the detected cgroup driver', async () => {
  const res = await berth.cri.runtime.runtimeConfig({});
  assert.ok([CgroupDriver.CGROUPFS, CgroupDriver.SYSTEMD].includes(res.linux!.cgroupDriver));
});

test('a second berth on the same socket is refused with a clear message', async () => {
  const child = spawn(process.execPath, [BERTH_MAIN, 'serve', '--config', berth.configFile], {
    stdio: 'pipe',
  });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
  assert.equal(code, 1);
  assert.match(stderr, /already listening on .*berth\.sock/);
});

test('CheckpointContainer of an unknown container answers NOT_FOUND naming it', async () => {
  // Every CRI RPC has a handler now; the UNIMPLEMENTED path is proven in src/server/grpc-server.test.ts.
  await assert.rejects(
    berth.cri.runtime.checkpointContainer({
      containerId: 'no-such-container',
      location: '/tmp/x.tar',
      timeout: 0n,
    }),
    (err: { code: number; details: string }) => {
      assert.equal(err.code, status.NOT_FOUND);
      assert.match(err.details, /no-such-container/);
      return true;
    },
  );
});

test('UpdateRuntimeConfig records a valid pod CIDR and refuses a malformed one', async () => {
  await berth.cri.runtime.updateRuntimeConfig({
    runtimeConfig: { networkConfig: { podCidr: '10.244.0.0/24,fd00::/64' } },
  });
  const res = await berth.cri.runtime.status({ verbose: true });
  assert.deepEqual(JSON.parse(res.info.podCidrs), ['10.244.0.0/24', 'fd00::/64']);
  await assert.rejects(
    berth.cri.runtime.updateRuntimeConfig({ runtimeConfig: { networkConfig: { podCidr: '10.244.0.0/33' } } }),
    (err: { code: number; details: string }) => {
      assert.equal(err.code, status.INVALID_ARGUMENT);
      assert.match(err.details, /pod CIDR "10\.244\.0\.0\/33"/);
      return true;
    },
  );
});

test('SIGTERM with its stderr gone (the reader died, as journald restarting does): berth still exits', async () => {
  const orphan = await startBerth();
  try {
    // Our ends of its stdout and stderr close: its next log writes fail with EPIPE.
    orphan.process.stdout!.destroy();
    orphan.process.stderr!.destroy();
    const exited = new Promise<number | null>((resolve) =>
      orphan.process.once('exit', (code) => resolve(code)),
    );
    orphan.process.kill('SIGTERM');
    const code = await Promise.race([
      exited,
      new Promise<string>((r) => setTimeout(() => r('still running'), 10_000)),
    ]);
    // It hung in pino's exit-time flushSync, which retries a broken pipe forever.
    assert.equal(code, 0);
  } finally {
    await orphan.kill();
    await orphan.cleanup();
  }
});
