import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, mkdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MetricType } from '../generated/api.js';
import {
  BASE_LABEL_KEYS,
  containerMetrics,
  metricDescriptors,
  podNetworkMetrics,
  readCgroupMetrics,
} from './metrics.js';

async function tree(files: Record<string, string>): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'berth-metrics-'));
  for (const [path, content] of Object.entries(files)) {
    await mkdir(join(dir, path, '..'), { recursive: true });
    await writeFile(join(dir, path), content);
  }
  return dir;
}

const target = { pod: 'web', namespace: 'default', container: 'nginx', id: 'abc', image: 'nginx:1' };

test('descriptors have unique names and cAdvisor label keys', () => {
  const descriptors = metricDescriptors();
  assert.equal(new Set(descriptors.map((d) => d.name)).size, descriptors.length);
  for (const d of descriptors) assert.deepEqual(d.labelKeys.slice(0, 5), [...BASE_LABEL_KEYS]);
  assert.ok(descriptors.some((d) => d.name === 'container_memory_working_set_bytes'));
});

test('cgroup v1: cpuacct, cpu.stat, memory and oom_control read into metrics', async () => {
  const root = await tree({
    'cpu/cpuacct.usage': '3500000000\n',
    'cpu/cpuacct.stat': 'user 200\nsystem 50\n',
    'cpu/cpu.stat': 'nr_periods 10\nnr_throttled 2\nthrottled_time 4000000000\n',
    'mem/memory.usage_in_bytes': '1000000\n',
    'mem/memory.max_usage_in_bytes': '2000000\n',
    'mem/memory.failcnt': '3\n',
    'mem/memory.stat':
      'cache 1\ntotal_cache 400000\ntotal_rss 500000\ntotal_mapped_file 7\ntotal_inactive_file 300000\n',
    'mem/memory.oom_control': 'oom_kill_disable 0\nunder_oom 0\noom_kill 1\n',
    'pids/pids.current': '4\n',
  });
  try {
    const sample = await readCgroupMetrics({
      version: 1,
      cpuacct: join(root, 'cpu'),
      memory: join(root, 'mem'),
      pids: join(root, 'pids'),
    });
    assert.equal(sample.cpuUserNs, 2_000_000_000n);
    assert.equal(sample.memoryWorkingSet, 700_000n);
    const metrics = containerMetrics(target, sample, 123n, {
      device: '/var/lib/berth',
      bytes: 10n,
      inodes: 2n,
    });
    const value = (name: string) => metrics.find((m) => m.name === name)?.value?.value;
    assert.equal(value('container_cpu_usage_seconds_total'), 3n);
    assert.equal(value('container_cpu_cfs_throttled_seconds_total'), 4n);
    assert.equal(value('container_memory_max_usage_bytes'), 2_000_000n);
    assert.equal(value('container_memory_cache'), 400_000n);
    assert.equal(value('container_memory_failcnt'), 3n);
    assert.equal(value('container_oom_events_total'), 1n);
    assert.equal(value('container_processes'), 4n);
    const fs = metrics.find((m) => m.name === 'container_fs_usage_bytes');
    assert.deepEqual(fs?.labelValues, ['web', 'default', 'nginx', 'abc', 'nginx:1', '/var/lib/berth']);
    assert.equal(
      metrics.find((m) => m.name === 'container_memory_usage_bytes')?.metricType,
      MetricType.GAUGE,
    );
    // Swap is not in this memory.stat: no made-up zero.
    assert.equal(value('container_memory_swap'), undefined);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});

test('cgroup v2: cpu.stat usec, memory.current/peak/stat/events', async () => {
  const root = await tree({
    'cpu.stat':
      'usage_usec 2500000\nuser_usec 1000000\nsystem_usec 1500000\nnr_periods 0\nnr_throttled 0\nthrottled_usec 0\n',
    'memory.current': '800\n',
    'memory.peak': '900\n',
    'memory.stat': 'anon 300\nfile 500\nfile_mapped 20\ninactive_file 100\n',
    'memory.swap.current': '0\n',
    'memory.events': 'low 0\nhigh 0\nmax 5\noom 1\noom_kill 2\n',
  });
  try {
    const sample = await readCgroupMetrics({ version: 2, dir: root });
    assert.equal(sample.cpuUsageNs, 2_500_000_000n);
    assert.equal(sample.cpuSystemNs, 1_500_000_000n);
    assert.equal(sample.memoryWorkingSet, 700n);
    assert.equal(sample.memoryRss, 300n);
    assert.equal(sample.oomEvents, 2n);
    assert.equal(sample.memoryFailcnt, undefined);
    assert.equal(sample.processes, undefined);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});

test('pod network metrics: one series per interface, counters', () => {
  const metrics = podNetworkMetrics(
    { ...target, container: 'POD' },
    [{ name: 'eth0', rxBytes: 10n, rxErrors: 0n, txBytes: 20n, txErrors: 1n }],
    5n,
  );
  assert.equal(metrics.length, 4);
  assert.ok(metrics.every((m) => m.metricType === MetricType.COUNTER && m.labelValues.at(-1) === 'eth0'));
  assert.equal(metrics.find((m) => m.name === 'container_network_transmit_errors_total')?.value?.value, 1n);
});
