import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { MetricType, NamespaceMode } from '../../src/generated/api.js';
import { containerConfig, podConfig, startEnv, waitForState, type Env } from './container-fixture.js';

let env: Env;
before(async () => {
  env = await startEnv('metrics');
});
after(async () => {
  await env?.cleanup();
});

test('ListMetricDescriptors describes every series ListPodSandboxMetrics returns', async () => {
  const rt = env.berth.cri.runtime;
  const { descriptors } = await rt.listMetricDescriptors({});
  const byName = new Map(descriptors.map((d) => [d.name, d]));
  assert.ok(byName.has('container_cpu_usage_seconds_total'));
  assert.ok(byName.has('container_network_receive_bytes_total'));

  const config = podConfig(env.work, { hostNetwork: false, name: 'metrics-pod' });
  const { podSandboxId } = await rt.runPodSandbox({ config, runtimeHandler: '' });
  const { containerId } = await rt.createContainer({
    podSandboxId,
    sandboxConfig: config,
    config: containerConfig('burner', {
      // Some CPU and a file in the writable layer, then idle.
      command: ['sh', '-c', 'i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; echo x > /data; sleep 3600'],
      linux: { securityContext: { namespaceOptions: { network: NamespaceMode.POD } } },
    }),
  });
  await rt.startContainer({ containerId });
  await waitForState(env.berth, containerId, (s) => s.state === 1);

  const { podMetrics } = await rt.listPodSandboxMetrics({});
  const pod = podMetrics.find((p) => p.podSandboxId === podSandboxId);
  assert.ok(pod, 'the running pod has metrics');
  const eth0 = pod.metrics.find(
    (m) => m.name === 'container_network_receive_bytes_total' && m.labelValues.at(-1) === 'eth0',
  );
  assert.ok(eth0, 'pod network series for eth0');
  assert.equal(eth0.labelValues[0], 'metrics-pod');
  assert.equal(eth0.metricType, MetricType.COUNTER);

  const container = pod.containerMetrics.find((c) => c.containerId === containerId);
  assert.ok(container);
  for (const m of [...pod.metrics, ...container.metrics]) {
    const d = byName.get(m.name);
    assert.ok(d, `${m.name} is described`);
    assert.equal(m.labelValues.length, d.labelKeys.length, `${m.name} label arity`);
    assert.ok(m.timestamp > 0n);
  }
  const value = (name: string) => container.metrics.find((m) => m.name === name)?.value?.value;
  const workingSet = value('container_memory_working_set_bytes');
  assert.ok(workingSet !== undefined && workingSet > 0n, 'working set is measured');
  assert.ok((value('container_processes') ?? 0n) >= 1n);
  assert.ok((value('container_fs_usage_bytes') ?? 0n) > 0n, 'the written file counts');
  const labels = container.metrics[0].labelValues;
  assert.deepEqual(labels.slice(0, 4), ['metrics-pod', 'test', 'burner', containerId]);

  // The stream form carries the same pods.
  const streamed: string[] = [];
  await new Promise<void>((resolve, reject) => {
    const call = env.berth.cri.rawRuntime.streamPodSandboxMetrics({});
    call.on('data', (r: { podSandboxMetrics: { podSandboxId: string }[] }) =>
      streamed.push(...r.podSandboxMetrics.map((p) => p.podSandboxId)),
    );
    call.on('end', resolve);
    call.on('error', reject);
  });
  assert.ok(streamed.includes(podSandboxId));

  // A stopped pod has no series.
  await rt.stopPodSandbox({ podSandboxId });
  const afterStop = await rt.listPodSandboxMetrics({});
  assert.equal(
    afterStop.podMetrics.find((p) => p.podSandboxId === podSandboxId),
    undefined,
  );
  await rt.removePodSandbox({ podSandboxId });
});
