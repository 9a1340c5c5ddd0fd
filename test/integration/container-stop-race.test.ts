import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { containerConfig, podConfig, startEnv, waitForState, type Env } from './container-fixture.js';

let env: Env;
before(async () => {
  env = await startEnv('stoprace');
});
after(async () => {
  await env?.cleanup();
});

test('StopContainer right after start: the stop signal reaches a handler installed late', async () => {
  const rt = env.berth.cri.runtime;
  const config = podConfig(env.work);
  const { podSandboxId } = await rt.runPodSandbox({ config, runtimeHandler: '' });
  const { containerId } = await rt.createContainer({
    podSandboxId,
    sandboxConfig: config,
    // PID 1 ignores SIGTERM (default disposition) until the trap is set 300 ms in.
    config: containerConfig('late-trap', {
      command: ['sh', '-c', 'sleep 0.3; trap "exit 42" TERM; while true; do sleep 0.05; done'],
    }),
  });
  await rt.startContainer({ containerId });
  const started = Date.now();
  await rt.stopContainer({ containerId, timeout: 30n });
  const elapsed = Date.now() - started;
  const status = await waitForState(env.berth, containerId, (s) => s.state === 2);
  assert.equal(
    status.exitCode,
    42,
    'the trap ran: SIGTERM was delivered, not SIGKILL after the grace period',
  );
  assert.ok(elapsed < 5_000, `stopped in ${elapsed} ms`);
  await rt.stopPodSandbox({ podSandboxId });
  await rt.removePodSandbox({ podSandboxId });
});
