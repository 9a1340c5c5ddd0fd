/**
 * CRI stats of containers and pods: CPU and memory from the cgroups,
 * writable-layer usage from the container's upper dir, network counters from
 * the pod's network namespace.
 */
import { join } from 'node:path';
import type {
  ContainerStats,
  CpuUsage,
  MemoryUsage,
  NetworkUsage,
  PodSandboxStats,
  UInt64Value,
} from '../generated/api.js';
import type { ContainerRecord } from '../container/record.js';
import { stateOf } from '../container/record.js';
import { rootfsPaths } from '../container/rootfs.js';
import type { SandboxRecord } from '../sandbox/types.js';
import { cgroupParentPath, type CgroupDriver } from '../oci/cgroup-driver.js';
import { mountpointOf } from '../image/store/usage.js';
import {
  CpuRates,
  cgroupDirsOfPath,
  cgroupDirsOfPid,
  nowNs,
  readCgroup,
  type CgroupDirs,
  type CgroupSample,
} from './cgroup.js';
import { dirUsage, netnsCounters } from './usage.js';
import { podNetnsPid } from './pod-netns.js';

const u64 = (value: bigint | undefined): UInt64Value | undefined =>
  value === undefined ? undefined : { value: value < 0n ? 0n : value };

export class StatsCollector {
  private readonly rates = new CpuRates();
  private mountpoint?: Promise<string>;

  constructor(
    private readonly root: string,
    private readonly cgroupDriver: CgroupDriver,
  ) {}

  /** Drops the CPU sample of a removed container or pod. */
  forget(id: string): void {
    this.rates.forget(id);
    this.rates.forget(`pod:${id}`);
  }

  private containersMountpoint(): Promise<string> {
    this.mountpoint ??= mountpointOf(join(this.root, 'containers')).catch(() => '/');
    return this.mountpoint;
  }

  private async cpu(key: string, dirs: CgroupDirs, sample: CgroupSample): Promise<CpuUsage | undefined> {
    if (sample.cpuUsageNs === undefined) return undefined;
    const rate = await this.rates.rate(key, sample, () => readCgroup(dirs));
    return {
      timestamp: rate?.timestampNs ?? sample.timestampNs,
      usageCoreNanoSeconds: u64(rate?.usageNs ?? sample.cpuUsageNs),
      usageNanoCores: u64(rate?.nanoCores),
      psi: undefined,
    };
  }

  private static memory(sample: CgroupSample): MemoryUsage | undefined {
    const m = sample.memory;
    if (!m) return undefined;
    return {
      timestamp: sample.timestampNs,
      workingSetBytes: u64(m.workingSetBytes),
      availableBytes: u64(m.availableBytes),
      usageBytes: u64(m.usageBytes),
      rssBytes: u64(m.rssBytes),
      pageFaults: u64(m.pageFaults),
      majorPageFaults: u64(m.majorPageFaults),
      psi: undefined,
    };
  }

  /** Stats of one container; CPU and memory only while its process lives. */
  async container(record: ContainerRecord): Promise<ContainerStats> {
    return (await this.containerWithCount(record)).stats;
  }

  private async containerWithCount(
    record: ContainerRecord,
  ): Promise<{ stats: ContainerStats; processCount?: bigint }> {
    const timestamp = nowNs();
    const stats: ContainerStats = {
      attributes: {
        id: record.id,
        metadata: { name: record.metadata.name, attempt: record.metadata.attempt },
        labels: record.labels,
        annotations: record.annotations,
      },
      cpu: undefined,
      memory: undefined,
      writableLayer: undefined,
      swap: undefined,
      io: undefined,
    };
    const [layer, mountpoint] = await Promise.all([
      dirUsage(rootfsPaths(record.containerDir).upper),
      this.containersMountpoint(),
    ]);
    stats.writableLayer = {
      timestamp,
      fsId: { mountpoint },
      usedBytes: u64(layer.bytes),
      inodesUsed: u64(layer.inodes),
    };
    if (stateOf(record) === 'exited' || record.pid <= 0) {
      this.rates.forget(record.id);
      return { stats };
    }
    const dirs = await cgroupDirsOfPid(record.pid);
    if (!dirs) return { stats };
    const sample = await readCgroup(dirs);
    stats.cpu = await this.cpu(record.id, dirs, sample);
    stats.memory = StatsCollector.memory(sample);
    if (sample.swap) {
      stats.swap = {
        timestamp: sample.timestampNs,
        swapUsageBytes: u64(sample.swap.usageBytes),
        swapAvailableBytes: u64(sample.swap.availableBytes),
      };
    }
    return { stats, processCount: sample.processCount };
  }

  /**
   * Stats of a pod: its cgroup parent when it has one (covers every
   * container), else the sum over the infra and the containers; network
   * counters from the pod's netns.
   */
  async pod(sandbox: SandboxRecord, containers: ContainerRecord[]): Promise<PodSandboxStats> {
    const timestamp = nowNs();
    const measured = await Promise.all(containers.map((c) => this.containerWithCount(c)));
    const containerStats = measured.map((m) => m.stats);
    let cpu: CpuUsage | undefined;
    let memory: MemoryUsage | undefined;
    let processCount: bigint | undefined;
    const infraAlive = sandbox.phase === 'ready' && sandbox.infra.pid > 0;
    if (sandbox.cgroupParent) {
      const dirs = await cgroupDirsOfPath(cgroupParentPath(sandbox.cgroupParent, this.cgroupDriver));
      const sample = await readCgroup(dirs);
      cpu = await this.cpu(`pod:${sandbox.id}`, dirs, sample);
      memory = StatsCollector.memory(sample);
      processCount = sample.processCount;
    } else {
      const infraDirs = infraAlive ? await cgroupDirsOfPid(sandbox.infra.pid) : undefined;
      const infraSample = infraDirs ? await readCgroup(infraDirs) : undefined;
      const infraCpu =
        infraDirs && infraSample ? await this.cpu(`pod:${sandbox.id}`, infraDirs, infraSample) : undefined;
      const counts = [infraSample?.processCount, ...measured.map((m) => m.processCount)];
      if (counts.some((c) => c !== undefined))
        processCount = counts.reduce<bigint>((a, c) => a + (c ?? 0n), 0n);
      const parts = [
        ...containerStats.map((s) => ({ cpu: s.cpu, memory: s.memory })),
        { cpu: infraCpu, memory: infraSample && StatsCollector.memory(infraSample) },
      ];
      const sum = (values: (UInt64Value | undefined)[]): UInt64Value | undefined =>
        values.some((v) => v) ? { value: values.reduce((a, v) => a + (v?.value ?? 0n), 0n) } : undefined;
      if (parts.some((p) => p.cpu)) {
        cpu = {
          timestamp,
          usageCoreNanoSeconds: sum(parts.map((p) => p.cpu?.usageCoreNanoSeconds)),
          usageNanoCores: sum(parts.map((p) => p.cpu?.usageNanoCores)),
          psi: undefined,
        };
      }
      if (parts.some((p) => p.memory)) {
        memory = {
          timestamp,
          workingSetBytes: sum(parts.map((p) => p.memory?.workingSetBytes)),
          availableBytes: undefined,
          usageBytes: sum(parts.map((p) => p.memory?.usageBytes)),
          rssBytes: sum(parts.map((p) => p.memory?.rssBytes)),
          pageFaults: sum(parts.map((p) => p.memory?.pageFaults)),
          majorPageFaults: sum(parts.map((p) => p.memory?.majorPageFaults)),
          psi: undefined,
        };
      }
    }
    let network: NetworkUsage | undefined;
    const netnsPid = podNetnsPid(sandbox, containers);
    if (netnsPid > 0) {
      const counters = await netnsCounters(netnsPid);
      if (counters) {
        const interfaces = counters.map((c) => ({
          name: c.name,
          rxBytes: u64(c.rxBytes),
          rxErrors: u64(c.rxErrors),
          txBytes: u64(c.txBytes),
          txErrors: u64(c.txErrors),
        }));
        network = {
          timestamp,
          defaultInterface: interfaces.find((i) => i.name === 'eth0') ?? interfaces[0],
          interfaces,
        };
      }
    }
    return {
      attributes: {
        id: sandbox.id,
        metadata: { ...sandbox.metadata },
        labels: sandbox.labels,
        annotations: sandbox.annotations,
      },
      linux: {
        cpu,
        memory,
        network,
        process: processCount === undefined ? undefined : { timestamp, processCount: u64(processCount) },
        containers: containerStats,
        io: undefined,
      },
      windows: undefined,
    };
  }
}
