import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { stat } from 'node:fs/promises';
import { status as GrpcStatus } from '@grpc/grpc-js';
import { run } from '../../src/util/run.js';
import { CRIU } from '../../src/server/container-checkpoint.js';
import { containerConfig, podConfig, startEnv, waitForState, type Env } from './container-fixture.js';

let env: Env;
before(async () => {
  env = await startEnv('checkpoint');
});
after(async () => {
  await env?.cleanup();
});

const code = (err: unknown) => (err as { code?: number }).code;

test('CheckpointContainer: bad input, stopped containers, and CRIU as this host has it', async () => {
  const rt = env.berth.cri.runtime;
  await assert.rejects(
    rt.checkpointContainer({ containerId: 'nope', location: '/tmp/x.tar', timeout: 0n }),
    (e) => {
      assert.equal(code(e), GrpcStatus.NOT_FOUND);
      return true;
    },
  );
  const config = podConfig(env.work);
  const { podSandboxId } = await rt.runPodSandbox({ config, runtimeHandler: '' });
  const { containerId } = await rt.createContainer({
    podSandboxId,
    sandboxConfig: config,
    config: containerConfig('saved', { command: ['sh', '-c', 'echo state > /kept; sleep 3600'] }),
  });
  const location = join(env.work, 'saved.tar');
  for (const bad of ['', 'relative.tar', '/tmp/../etc/x.tar', join(env.work, 'missing-dir', 'x.tar')]) {
    await assert.rejects(rt.checkpointContainer({ containerId, location: bad, timeout: 0n }), (e) => {
      assert.equal(code(e), GrpcStatus.INVALID_ARGUMENT, `location ${JSON.stringify(bad)}`);
      return true;
    });
  }
  await assert.rejects(rt.checkpointContainer({ containerId, location, timeout: 0n }), (e) => {
    assert.equal(code(e), GrpcStatus.FAILED_PRECONDITION, 'a created container cannot be checkpointed');
    assert.match((e as Error).message, /not running/);
    return true;
  });
  await rt.startContainer({ containerId });
  await waitForState(env.berth, containerId, (s) => s.state === 1);

  const criuWorks = (await run(CRIU, ['check'])).code === 0;
  if (criuWorks) {
    await rt.checkpointContainer({ containerId, location, timeout: 60n });
    assert.ok((await stat(location)).size > 0);
    const listing = (await run('tar', ['-tf', location])).stdout;
    for (const entry of ['checkpoint/', 'spec.dump', 'config.dump', 'rootfs-diff.tar'])
      assert.match(listing, new RegExp(entry));
    const status = await waitForState(env.berth, containerId, (s) => s.state === 1);
    assert.equal(status.state, 1, 'the container keeps running');
  } else {
    // This host's CRIU cannot run (e.g. Debian's 3.17 on a 6.x vDSO): a clear refusal, no archive.
    await assert.rejects(rt.checkpointContainer({ containerId, location, timeout: 0n }), (e) => {
      assert.equal(code(e), GrpcStatus.FAILED_PRECONDITION);
      assert.match((e as Error).message, /criu check/);
      assert.match((e as Error).message, new RegExp(containerId));
      return true;
    });
    await assert.rejects(stat(location));
  }
  await rt.stopPodSandbox({ podSandboxId });
  await rt.removePodSandbox({ podSandboxId });
});
