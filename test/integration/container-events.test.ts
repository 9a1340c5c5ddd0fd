import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { ContainerEventType, NamespaceMode, type ContainerEventResponse } from '../../src/generated/api.js';
import { containerConfig, podConfig, startEnv, type Env } from './container-fixture.js';

let env: Env;
before(async () => {
  env = await startEnv('events');
});
after(async () => {
  await env?.cleanup();
});

/** Collects GetContainerEvents until cancelled. */
function subscribe(): {
  events: ContainerEventResponse[];
  wait(n: (e: ContainerEventResponse[]) => boolean): Promise<void>;
  cancel(): void;
} {
  const events: ContainerEventResponse[] = [];
  const call = env.berth.cri.rawRuntime.getContainerEvents({});
  const waiters: (() => void)[] = [];
  call.on('data', (e: ContainerEventResponse) => {
    events.push(e);
    for (const w of waiters.splice(0)) w();
  });
  call.on('error', () => undefined);
  return {
    events,
    async wait(done) {
      const deadline = Date.now() + 20_000;
      while (!done(events)) {
        if (Date.now() > deadline) throw new Error(`events so far: ${JSON.stringify(events.map(brief))}`);
        await new Promise<void>((resolve) => {
          waiters.push(resolve);
          setTimeout(resolve, 500);
        });
      }
    },
    cancel: () => call.cancel(),
  };
}

const brief = (e: ContainerEventResponse) =>
  `${e.containerId.slice(0, 8)}:${ContainerEventType[e.containerEventType]}`;
const has = (events: ContainerEventResponse[], id: string, type: ContainerEventType) =>
  events.some((e) => e.containerId === id && e.containerEventType === type);

test('GetContainerEvents reports the pod and its containers through their whole lives', async () => {
  const rt = env.berth.cri.runtime;
  const stream = subscribe();
  // Let the subscription reach the daemon before the first change.
  await new Promise((r) => setTimeout(r, 200));
  const config = podConfig(env.work, { hostNetwork: false });
  const { podSandboxId } = await rt.runPodSandbox({ config, runtimeHandler: '' });
  await stream.wait((e) => has(e, podSandboxId, ContainerEventType.CONTAINER_STARTED_EVENT));
  const created = stream.events.find((e) => e.containerId === podSandboxId)!;
  assert.equal(created.containerEventType, ContainerEventType.CONTAINER_CREATED_EVENT, 'CREATED comes first');
  assert.equal(created.podSandboxStatus?.id, podSandboxId);
  assert.ok(created.createdAt > 0n);

  const { containerId } = await rt.createContainer({
    podSandboxId,
    sandboxConfig: config,
    config: containerConfig('quitter', {
      command: ['sh', '-c', 'sleep 0.5; exit 3'],
      linux: { securityContext: { namespaceOptions: { network: NamespaceMode.POD } } },
    }),
  });
  await stream.wait((e) => has(e, containerId, ContainerEventType.CONTAINER_CREATED_EVENT));
  await rt.startContainer({ containerId });
  // The container exits by itself: the STOPPED event comes from conmon's exit file, not an RPC.
  await stream.wait((e) => has(e, containerId, ContainerEventType.CONTAINER_STOPPED_EVENT));
  const stopped = stream.events.find(
    (e) =>
      e.containerId === containerId && e.containerEventType === ContainerEventType.CONTAINER_STOPPED_EVENT,
  )!;
  const status = stopped.containersStatuses.find((s) => s.id === containerId);
  assert.equal(status?.exitCode, 3);
  assert.equal(stopped.podSandboxStatus?.id, podSandboxId);
  assert.ok(has(stream.events, containerId, ContainerEventType.CONTAINER_STARTED_EVENT));

  await rt.removeContainer({ containerId });
  await stream.wait((e) => has(e, containerId, ContainerEventType.CONTAINER_DELETED_EVENT));
  await rt.stopPodSandbox({ podSandboxId });
  await stream.wait((e) => has(e, podSandboxId, ContainerEventType.CONTAINER_STOPPED_EVENT));
  await rt.removePodSandbox({ podSandboxId });
  await stream.wait((e) => has(e, podSandboxId, ContainerEventType.CONTAINER_DELETED_EVENT));

  const order = stream.events.filter((e) => e.containerId === containerId).map((e) => e.containerEventType);
  assert.deepEqual(order, [
    ContainerEventType.CONTAINER_CREATED_EVENT,
    ContainerEventType.CONTAINER_STARTED_EVENT,
    ContainerEventType.CONTAINER_STOPPED_EVENT,
    ContainerEventType.CONTAINER_DELETED_EVENT,
  ]);
  // Idempotent repeats are not news.
  await rt.stopPodSandbox({ podSandboxId });
  await rt.removePodSandbox({ podSandboxId });
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(stream.events.filter((e) => e.containerId === podSandboxId).length, 4);
  stream.cancel();
});

test('an open event stream does not hold up shutdown', async () => {
  const stream = subscribe();
  await new Promise((r) => setTimeout(r, 200));
  const started = Date.now();
  const code = await env.berth.stop();
  assert.equal(code, 0);
  assert.ok(Date.now() - started < 10_000);
  stream.cancel();
});
