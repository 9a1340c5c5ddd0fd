/**
 * cAdvisor-named metrics for ListMetricDescriptors / ListPodSandboxMetrics,
 * which kubelet serves on /metrics/cadvisor when it takes pod and container
 * stats from the CRI. Names, types and label keys follow cAdvisor (as
 * containerd and CRI-O do) so existing dashboards keep working; only what
 * berth can read from cgroup files, the writable layer and the pod's netns is
 * described, so no series is ever a made-up zero.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Metric, MetricType, type MetricDescriptor } from '../generated/api.js';
import { errnoCode } from '../errors.js';
import { parseFlatKeyed, type CgroupDirs } from './cgroup.js';
import type { InterfaceCounters } from './usage.js';

export const BASE_LABEL_KEYS = ['pod', 'namespace', 'container', 'id', 'image'] as const;
export const NETWORK_LABEL_KEYS = [...BASE_LABEL_KEYS, 'interface'] as const;
export const DISK_LABEL_KEYS = [...BASE_LABEL_KEYS, 'device'] as const;

interface Descriptor {
  name: string;
  help: string;
  type: MetricType;
  labelKeys: readonly string[];
}

const counter = (name: string, help: string, labelKeys: readonly string[] = BASE_LABEL_KEYS): Descriptor => ({
  name,
  help,
  type: MetricType.COUNTER,
  labelKeys,
});
const gauge = (name: string, help: string, labelKeys: readonly string[] = BASE_LABEL_KEYS): Descriptor => ({
  name,
  help,
  type: MetricType.GAUGE,
  labelKeys,
});

export const DESCRIPTORS = {
  cpuUsage: counter('container_cpu_usage_seconds_total', 'Cumulative CPU time consumed in seconds.'),
  cpuUser: counter('container_cpu_user_seconds_total', 'Cumulative user CPU time consumed in seconds.'),
  cpuSystem: counter('container_cpu_system_seconds_total', 'Cumulative system CPU time consumed in seconds.'),
  cfsPeriods: counter('container_cpu_cfs_periods_total', 'Number of elapsed enforcement period intervals.'),
  cfsThrottledPeriods: counter(
    'container_cpu_cfs_throttled_periods_total',
    'Number of throttled period intervals.',
  ),
  cfsThrottledSeconds: counter(
    'container_cpu_cfs_throttled_seconds_total',
    'Total time duration the container has been throttled.',
  ),
  memoryUsage: gauge('container_memory_usage_bytes', 'Current memory usage in bytes, including all memory.'),
  memoryMaxUsage: gauge('container_memory_max_usage_bytes', 'Maximum memory usage recorded in bytes.'),
  memoryWorkingSet: gauge(
    'container_memory_working_set_bytes',
    'Memory actively used by the container: usage minus inactive file pages.',
  ),
  memoryRss: gauge('container_memory_rss', 'Anonymous memory (RSS) in bytes.'),
  memoryCache: gauge('container_memory_cache', 'Page cache memory in bytes.'),
  memoryMappedFile: gauge('container_memory_mapped_file', 'Memory-mapped file bytes.'),
  memorySwap: gauge('container_memory_swap', 'Swap usage in bytes.'),
  memoryFailcnt: counter(
    'container_memory_failcnt',
    'Times memory usage hit the cgroup v1 limit (cgroup v1 only).',
  ),
  oomEvents: counter('container_oom_events_total', 'Out-of-memory kills observed in the container.'),
  processes: gauge('container_processes', 'Number of processes running in the container.'),
  fsUsage: gauge(
    'container_fs_usage_bytes',
    "Bytes used by the container's writable layer.",
    DISK_LABEL_KEYS,
  ),
  fsInodes: gauge(
    'container_fs_inodes_total',
    "Inodes used by the container's writable layer.",
    DISK_LABEL_KEYS,
  ),
  netRxBytes: counter(
    'container_network_receive_bytes_total',
    'Cumulative bytes received.',
    NETWORK_LABEL_KEYS,
  ),
  netRxErrors: counter(
    'container_network_receive_errors_total',
    'Cumulative errors while receiving.',
    NETWORK_LABEL_KEYS,
  ),
  netTxBytes: counter(
    'container_network_transmit_bytes_total',
    'Cumulative bytes transmitted.',
    NETWORK_LABEL_KEYS,
  ),
  netTxErrors: counter(
    'container_network_transmit_errors_total',
    'Cumulative errors while transmitting.',
    NETWORK_LABEL_KEYS,
  ),
} satisfies Record<string, Descriptor>;

export function metricDescriptors(): MetricDescriptor[] {
  return Object.values(DESCRIPTORS).map((d) => ({ name: d.name, help: d.help, labelKeys: [...d.labelKeys] }));
}

/** Everything the metrics read from one cgroup; a field is absent when the host doesn't expose it. */
export interface CgroupMetricsSample {
  cpuUsageNs?: bigint;
  cpuUserNs?: bigint;
  cpuSystemNs?: bigint;
  cfsPeriods?: bigint;
  cfsThrottledPeriods?: bigint;
  cfsThrottledNs?: bigint;
  memoryUsage?: bigint;
  memoryMaxUsage?: bigint;
  memoryWorkingSet?: bigint;
  memoryRss?: bigint;
  memoryCache?: bigint;
  memoryMappedFile?: bigint;
  memorySwap?: bigint;
  memoryFailcnt?: bigint;
  oomEvents?: bigint;
  processes?: bigint;
}

async function readText(path: string | undefined): Promise<string | undefined> {
  if (!path) return undefined;
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    const code = errnoCode(err);
    if (code === 'ENOENT' || code === 'ENODEV' || code === 'ENOTDIR' || code === 'EINVAL') return undefined;
    throw err;
  }
}

async function readNumber(path: string | undefined): Promise<bigint | undefined> {
  const text = (await readText(path))?.trim();
  return text && /^\d+$/.test(text) ? BigInt(text) : undefined;
}

/**
 * cpuacct.stat counts USER_HZ ticks. USER_HZ is 100 on every Linux ABI
 * berth runs on (it is fixed by the ABI, unlike the kernel's HZ).
 */
const NS_PER_USER_HZ_TICK = 10_000_000n;

const workingSet = (usage: bigint | undefined, inactiveFile: bigint | undefined): bigint | undefined =>
  usage === undefined ? undefined : usage > (inactiveFile ?? 0n) ? usage - (inactiveFile ?? 0n) : 0n;

/** Reads the counters behind every descriptor from a v1 or v2 cgroup. */
export async function readCgroupMetrics(dirs: CgroupDirs): Promise<CgroupMetricsSample> {
  if (dirs.version === 1) {
    const memory = dirs.memory;
    const [usage, cpuacctStat, cpuStat, memUsage, memMax, memStat, failcnt, oomControl, pids] =
      await Promise.all([
        readNumber(dirs.cpuacct && join(dirs.cpuacct, 'cpuacct.usage')),
        readText(dirs.cpuacct && join(dirs.cpuacct, 'cpuacct.stat')),
        // Debian co-mounts cpu,cpuacct; a separate cpu mount simply leaves throttling out.
        readText(dirs.cpuacct && join(dirs.cpuacct, 'cpu.stat')),
        readNumber(memory && join(memory, 'memory.usage_in_bytes')),
        readNumber(memory && join(memory, 'memory.max_usage_in_bytes')),
        readText(memory && join(memory, 'memory.stat')),
        readNumber(memory && join(memory, 'memory.failcnt')),
        readText(memory && join(memory, 'memory.oom_control')),
        readNumber(dirs.pids && join(dirs.pids, 'pids.current')),
      ]);
    const acct = cpuacctStat === undefined ? undefined : parseFlatKeyed(cpuacctStat);
    const cpu = cpuStat === undefined ? undefined : parseFlatKeyed(cpuStat);
    const mem = memStat === undefined ? undefined : parseFlatKeyed(memStat);
    const oom = oomControl === undefined ? undefined : parseFlatKeyed(oomControl);
    const user = acct?.get('user');
    const system = acct?.get('system');
    return {
      cpuUsageNs: usage,
      cpuUserNs: user === undefined ? undefined : user * NS_PER_USER_HZ_TICK,
      cpuSystemNs: system === undefined ? undefined : system * NS_PER_USER_HZ_TICK,
      cfsPeriods: cpu?.get('nr_periods'),
      cfsThrottledPeriods: cpu?.get('nr_throttled'),
      cfsThrottledNs: cpu?.get('throttled_time'),
      memoryUsage: memUsage,
      memoryMaxUsage: memMax,
      memoryWorkingSet: workingSet(memUsage, mem?.get('total_inactive_file')),
      memoryRss: mem?.get('total_rss'),
      memoryCache: mem?.get('total_cache'),
      memoryMappedFile: mem?.get('total_mapped_file'),
      memorySwap: mem?.get('total_swap'),
      memoryFailcnt: failcnt,
      oomEvents: oom?.get('oom_kill'),
      processes: pids,
    };
  }
  const dir = dirs.dir;
  const [cpuStat, memCurrent, memPeak, memStat, swap, events, pids] = await Promise.all([
    readText(join(dir, 'cpu.stat')),
    readNumber(join(dir, 'memory.current')),
    readNumber(join(dir, 'memory.peak')),
    readText(join(dir, 'memory.stat')),
    readNumber(join(dir, 'memory.swap.current')),
    readText(join(dir, 'memory.events')),
    readNumber(join(dir, 'pids.current')),
  ]);
  const cpu = cpuStat === undefined ? undefined : parseFlatKeyed(cpuStat);
  const mem = memStat === undefined ? undefined : parseFlatKeyed(memStat);
  const usec = (key: string): bigint | undefined => {
    const v = cpu?.get(key);
    return v === undefined ? undefined : v * 1000n;
  };
  return {
    cpuUsageNs: usec('usage_usec'),
    cpuUserNs: usec('user_usec'),
    cpuSystemNs: usec('system_usec'),
    cfsPeriods: cpu?.get('nr_periods'),
    cfsThrottledPeriods: cpu?.get('nr_throttled'),
    cfsThrottledNs: usec('throttled_usec'),
    memoryUsage: memCurrent,
    memoryMaxUsage: memPeak,
    memoryWorkingSet: workingSet(memCurrent, mem?.get('inactive_file')),
    memoryRss: mem?.get('anon'),
    memoryCache: mem?.get('file'),
    memoryMappedFile: mem?.get('file_mapped'),
    memorySwap: swap,
    oomEvents: events === undefined ? undefined : parseFlatKeyed(events).get('oom_kill'),
    processes: pids,
  };
}

/** Label values for BASE_LABEL_KEYS, in order. */
export interface MetricTarget {
  pod: string;
  namespace: string;
  container: string;
  id: string;
  image: string;
}

const baseLabels = (t: MetricTarget): string[] => [t.pod, t.namespace, t.container, t.id, t.image];

function metric(d: Descriptor, timestampNs: bigint, labelValues: string[], value: bigint): Metric {
  return Metric.fromPartial({
    name: d.name,
    timestamp: timestampNs,
    metricType: d.type,
    labelValues,
    value: { value },
  });
}

/** Container metrics from a cgroup sample and the writable layer's usage; absent readings are left out. */
export function containerMetrics(
  target: MetricTarget,
  sample: CgroupMetricsSample,
  timestampNs: bigint,
  writableLayer?: { device: string; bytes: bigint; inodes: bigint },
): Metric[] {
  const labels = baseLabels(target);
  const out: Metric[] = [];
  const add = (d: Descriptor, value: bigint | undefined) => {
    if (value !== undefined) out.push(metric(d, timestampNs, labels, value));
  };
  // cAdvisor exposes seconds as floats; the CRI carries integers, so CPU
  // times are whole seconds here, as containerd reports them.
  const seconds = (ns: bigint | undefined) => (ns === undefined ? undefined : ns / 1_000_000_000n);
  add(DESCRIPTORS.cpuUsage, seconds(sample.cpuUsageNs));
  add(DESCRIPTORS.cpuUser, seconds(sample.cpuUserNs));
  add(DESCRIPTORS.cpuSystem, seconds(sample.cpuSystemNs));
  add(DESCRIPTORS.cfsPeriods, sample.cfsPeriods);
  add(DESCRIPTORS.cfsThrottledPeriods, sample.cfsThrottledPeriods);
  add(DESCRIPTORS.cfsThrottledSeconds, seconds(sample.cfsThrottledNs));
  add(DESCRIPTORS.memoryUsage, sample.memoryUsage);
  add(DESCRIPTORS.memoryMaxUsage, sample.memoryMaxUsage);
  add(DESCRIPTORS.memoryWorkingSet, sample.memoryWorkingSet);
  add(DESCRIPTORS.memoryRss, sample.memoryRss);
  add(DESCRIPTORS.memoryCache, sample.memoryCache);
  add(DESCRIPTORS.memoryMappedFile, sample.memoryMappedFile);
  add(DESCRIPTORS.memorySwap, sample.memorySwap);
  add(DESCRIPTORS.memoryFailcnt, sample.memoryFailcnt);
  add(DESCRIPTORS.oomEvents, sample.oomEvents);
  add(DESCRIPTORS.processes, sample.processes);
  if (writableLayer) {
    const diskLabels = [...labels, writableLayer.device];
    out.push(metric(DESCRIPTORS.fsUsage, timestampNs, diskLabels, writableLayer.bytes));
    out.push(metric(DESCRIPTORS.fsInodes, timestampNs, diskLabels, writableLayer.inodes));
  }
  return out;
}

/** Pod-level network metrics, one series per interface of the pod's netns. */
export function podNetworkMetrics(
  target: MetricTarget,
  interfaces: readonly InterfaceCounters[],
  timestampNs: bigint,
): Metric[] {
  const out: Metric[] = [];
  for (const iface of interfaces) {
    const labels = [...baseLabels(target), iface.name];
    out.push(
      metric(DESCRIPTORS.netRxBytes, timestampNs, labels, iface.rxBytes),
      metric(DESCRIPTORS.netRxErrors, timestampNs, labels, iface.rxErrors),
      metric(DESCRIPTORS.netTxBytes, timestampNs, labels, iface.txBytes),
      metric(DESCRIPTORS.netTxErrors, timestampNs, labels, iface.txErrors),
    );
  }
  return out;
}
