import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { status as GrpcStatus } from '@grpc/grpc-js';
import { LinuxContainerResources } from '../../src/generated/api.js';
import { podConfig, startEnv, type Env } from './container-fixture.js';

let env: Env;
before(async () => {
  env = await startEnv('podres');
});
after(async () => {
  await env?.cleanup();
});

const code = (err: unknown) => (err as { code?: number }).code;

test('UpdatePodSandboxResources records new pod resources; bad input and unknown pods are refused', async () => {
  const rt = env.berth.cri.runtime;
  await assert.rejects(
    rt.updatePodSandboxResources({ podSandboxId: 'nope', overhead: undefined, resources: undefined }),
    (e) => code(e) === GrpcStatus.NOT_FOUND,
  );
  const config = podConfig(env.work);
  const { podSandboxId } = await rt.runPodSandbox({ config, runtimeHandler: '' });
  const resources = {
    cpuShares: 512n,
    memoryLimitInBytes: 256n * 1024n * 1024n,
    cpuPeriod: 100000n,
    cpuQuota: 50000n,
  };
  await rt.updatePodSandboxResources({
    podSandboxId,
    overhead: undefined,
    resources: LinuxContainerResources.fromPartial(resources),
  });
  const { info } = await rt.podSandboxStatus({ podSandboxId, verbose: true });
  const recorded = (JSON.parse(info.info) as { config: { linux?: { resources?: Record<string, string> } } })
    .config.linux?.resources;
  assert.equal(recorded?.memoryLimitInBytes, String(256 * 1024 * 1024));
  assert.equal(recorded?.cpuQuota, '50000');

  await assert.rejects(
    rt.updatePodSandboxResources({
      podSandboxId,
      overhead: undefined,
      resources: LinuxContainerResources.fromPartial({
        cpuShares: -5n,
      }),
    }),
    (e) => {
      assert.equal(code(e), GrpcStatus.INVALID_ARGUMENT);
      assert.match((e as Error).message, /cpu_shares/);
      return true;
    },
  );
  await rt.stopPodSandbox({ podSandboxId });
  await assert.rejects(
    rt.updatePodSandboxResources({ podSandboxId, overhead: undefined, resources: undefined }),
    (e) => code(e) === GrpcStatus.FAILED_PRECONDITION,
  );
  await rt.removePodSandbox({ podSandboxId });
});
