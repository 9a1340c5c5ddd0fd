/**
 * bench/pod-start: how fast berth starts pods, next to the floor (bare `runc
 * run -d`, CNI ADD on a fresh netns) and, when Debian's containerd is
 * installed, containerd measured the same way in the same run.
 *
 *   node dist/bench/pod-start/main.js [--sequential 20] [--concurrent 10] [--running 100]
 *
 * Each pod is one RunPodSandbox + CreateContainer + StartContainer over gRPC,
 * with the same catatonit pause and busybox workload on both runtimes.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { runChecked } from '../../src/util/run.js';
import { BERTH_MAIN, startBerth } from '../../test/helpers/berth-process.js';
import { startStallProbe, type StallReport } from '../lib/stall-probe.js';
import type { CriClients } from '../../test/helpers/cri-client.js';
import { containerdInstalled, startContainerd } from '../lib/containerd.js';
import { pidsByName, rssBytes } from '../lib/proc.js';
import { fmtMiB, fmtMs, median, msSince, percentile, table } from '../lib/stats.js';
import { PAUSE_IMAGE, writeBenchImages } from '../lib/images.js';
import { CNI_BIN_DIR, benchConflist } from '../lib/cni.js';
import { benchSandboxConfig, workloadConfig } from '../lib/pod-configs.js';
import { measureRuncFloor } from './runc-floor.js';
import { formatCniFloor, measureCniFloor } from './cni-floor.js';

interface PodTiming {
  runPodSandbox: number;
  createContainer: number;
  startContainer: number;
  total: number;
}

interface TargetResult {
  name: string;
  sequential: PodTiming[];
  concurrent: PodTiming[];
  concurrentWallMs: number;
  rssIdle: number;
  rssAt: { pods: number; rss: number }[];
  monitorRss: number[];
  listContainersMs: number[];
  /** After LIST_WARM_UP calls, one every LIST_PACE_MS. */
  listContainersWarmMs: number[];
  /** What the stall probe saw while listContainersWarmMs was measured. */
  hostStalls: StallReport;
}

interface Target {
  name: string;
  cri: CriClients;
  daemonPid: number;
  monitorName: string;
  logDir: string;
}

/** ListContainers after the first 200: warm-up calls, then calls 5 ms apart (kubelet relists once a second). */
const LIST_WARM_UP = 300;
const LIST_WARM_CALLS = 500;
const LIST_PACE_MS = 5;

async function startPod(target: Target, index: number): Promise<{ podId: string; timing: PodTiming }> {
  const uid = randomBytes(8).toString('hex');
  const logDirectory = join(target.logDir, uid);
  await mkdir(logDirectory, { recursive: true });
  const sandboxConfig = benchSandboxConfig({
    name: `bench-${index}-${uid.slice(0, 6)}`,
    hostname: `bench-${index}`,
    uid,
    logDirectory,
  });
  const t0 = process.hrtime.bigint();
  const { podSandboxId } = await target.cri.runtime.runPodSandbox({
    config: sandboxConfig,
    runtimeHandler: '',
  });
  const runPodSandbox = msSince(t0);
  const t1 = process.hrtime.bigint();
  const { containerId } = await target.cri.runtime.createContainer({
    podSandboxId,
    config: workloadConfig(),
    sandboxConfig,
  });
  const createContainer = msSince(t1);
  const t2 = process.hrtime.bigint();
  await target.cri.runtime.startContainer({ containerId });
  const startContainer = msSince(t2);
  return {
    podId: podSandboxId,
    timing: { runPodSandbox, createContainer, startContainer, total: msSince(t0) },
  };
}

async function removePods(target: Target, podIds: string[]): Promise<void> {
  for (const podSandboxId of podIds) {
    await target.cri.runtime.stopPodSandbox({ podSandboxId });
    await target.cri.runtime.removePodSandbox({ podSandboxId });
  }
}

async function monitorRss(name: string): Promise<number[]> {
  const pids = await pidsByName(name);
  return (await Promise.all(pids.map(rssBytes))).filter(Number.isFinite);
}

async function measureTarget(
  target: Target,
  counts: { sequential: number; concurrent: number; running: number },
): Promise<TargetResult> {
  // One warm-up pod so both runtimes have their caches and code paths hot.
  const warm = await startPod(target, 0);
  await removePods(target, [warm.podId]);
  const rssIdle = await rssBytes(target.daemonPid);

  const sequential: PodTiming[] = [];
  const sequentialIds: string[] = [];
  for (let i = 0; i < counts.sequential; i++) {
    const pod = await startPod(target, i + 1);
    sequential.push(pod.timing);
    sequentialIds.push(pod.podId);
  }
  await removePods(target, sequentialIds);

  const wallStart = process.hrtime.bigint();
  const concurrentPods = await Promise.all(
    Array.from({ length: counts.concurrent }, (_, i) => startPod(target, 100 + i)),
  );
  const concurrentWallMs = msSince(wallStart);
  await removePods(
    target,
    concurrentPods.map((p) => p.podId),
  );

  const running: string[] = [];
  const rssAt: { pods: number; rss: number }[] = [];
  for (let i = 0; i < counts.running; i++) {
    running.push((await startPod(target, 1000 + i)).podId);
    if (i + 1 === 20 || i + 1 === counts.running) {
      rssAt.push({ pods: i + 1, rss: await rssBytes(target.daemonPid) });
    }
  }
  const monitors = await monitorRss(target.monitorName);
  // The first calls (cold) one after another, as before; then, after warm-up calls that
  // let both sides' JIT settle, calls paced like kubelet's relists, beside a probe that
  // tells the host's own stalls apart from berth's.
  const listContainersMs: number[] = [];
  for (let i = 0; i < 200; i++) {
    const t = process.hrtime.bigint();
    await target.cri.runtime.listContainers({ filter: undefined });
    listContainersMs.push(msSince(t));
  }
  for (let i = 0; i < LIST_WARM_UP; i++) await target.cri.runtime.listContainers({ filter: undefined });
  const probe = await startStallProbe();
  const listContainersWarmMs: number[] = [];
  for (let i = 0; i < LIST_WARM_CALLS; i++) {
    const t = process.hrtime.bigint();
    await target.cri.runtime.listContainers({ filter: undefined });
    listContainersWarmMs.push(msSince(t));
    await new Promise((resolve) => setTimeout(resolve, LIST_PACE_MS));
  }
  const hostStalls = await probe.stop();
  await removePods(target, running);
  return {
    name: target.name,
    sequential,
    concurrent: concurrentPods.map((p) => p.timing),
    concurrentWallMs,
    rssIdle,
    rssAt,
    monitorRss: monitors,
    listContainersMs,
    listContainersWarmMs,
    hostStalls,
  };
}

function summarize(results: TargetResult[]): string {
  const rows: string[][] = [];
  // Each berth configuration against the peer measured in the same run, when there is one.
  const peer = results.length > 1 && results.at(-1)!.name === 'containerd' ? results.at(-1)! : undefined;
  const compared = peer ? results.slice(0, -1) : [];
  const phases: (keyof PodTiming)[] = ['runPodSandbox', 'createContainer', 'startContainer', 'total'];
  for (const mode of ['sequential', 'concurrent'] as const) {
    for (const phase of phases) {
      const row = [`${mode} ${phase}`];
      for (const r of results) {
        const samples = r[mode].map((t) => t[phase]);
        row.push(`${fmtMs(median(samples))} / ${fmtMs(percentile(samples, 95))}`);
      }
      for (const r of compared) {
        const a = median(r[mode].map((t) => t[phase]));
        const b = median(peer![mode].map((t) => t[phase]));
        row.push(`${(a / b).toFixed(2)}`);
      }
      rows.push(row);
    }
  }
  const scalar = (label: string, value: (r: TargetResult) => number, fmt: (n: number) => string) => {
    const row = [label, ...results.map((r) => fmt(value(r)))];
    for (const r of compared) row.push((value(r) / value(peer!)).toFixed(2));
    rows.push(row);
  };
  scalar('concurrent wall time', (r) => r.concurrentWallMs, fmtMs);
  scalar('daemon RSS idle', (r) => r.rssIdle, fmtMiB);
  for (let i = 0; i < results[0].rssAt.length; i++) {
    const pods = results[0].rssAt[i].pods;
    scalar(`daemon RSS, ${pods} pods running`, (r) => r.rssAt[i]?.rss ?? Number.NaN, fmtMiB);
  }
  scalar(
    'daemon RSS per running pod',
    (r) => {
      const last = r.rssAt.at(-1);
      return last ? (last.rss - r.rssIdle) / last.pods : Number.NaN;
    },
    fmtMiB,
  );
  scalar('monitor RSS (median per process)', (r) => median(r.monitorRss), fmtMiB);
  scalar('monitor processes', (r) => r.monitorRss.length, String);
  scalar('ListContainers median', (r) => median(r.listContainersMs), fmtMs);
  scalar('ListContainers p99', (r) => percentile(r.listContainersMs, 99), fmtMs);
  scalar('ListContainers warm median', (r) => median(r.listContainersWarmMs), fmtMs);
  scalar('ListContainers warm p99', (r) => percentile(r.listContainersWarmMs, 99), fmtMs);
  scalar('  host stalls >= 4 ms meanwhile', (r) => r.hostStalls.stalls, String);
  scalar('  worst host stall meanwhile', (r) => r.hostStalls.worstMs, fmtMs);
  const header = ['metric (median / p95)', ...results.map((r) => r.name)];
  for (const r of compared) header.push(`${r.name}/${peer!.name}`);
  return table(header, rows);
}

/**
 * Median (and p95) of each step the daemon's debug lines time: 'pod sandbox
 * ready' (steps, ms) and 'container created' (ms). Only for --steps runs.
 */
function stepMedians(logs: string): string {
  const samples = new Map<string, number[]>();
  const add = (key: string, value: unknown) => {
    if (typeof value !== 'number') return;
    let list = samples.get(key);
    if (!list) samples.set(key, (list = []));
    list.push(value);
  };
  for (const line of logs.split('\n')) {
    if (!line.startsWith('{')) continue;
    let entry: { msg?: string; ms?: unknown; steps?: Record<string, unknown> };
    try {
      entry = JSON.parse(line) as typeof entry;
    } catch {
      continue;
    }
    if (entry.msg === 'pod sandbox ready') {
      add('RunPodSandbox (daemon)', entry.ms);
      for (const [k, v] of Object.entries(entry.steps ?? {})) add(`  pod ${k}`, v);
    } else if (entry.msg === 'container created' && typeof entry.ms === 'object' && entry.ms) {
      for (const [k, v] of Object.entries(entry.ms)) add(`  container ${k}`, v);
    } else if (entry.msg === 'container created under conmon') {
      add('  conmon create (runtime create)', entry.ms);
    }
  }
  const rows = [...samples].map(([k, v]) => [
    k,
    String(v.length),
    fmtMs(median(v)),
    fmtMs(percentile(v, 95)),
  ]);
  return table(['berth step', 'n', 'median', 'p95'], rows);
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      sequential: { type: 'string', default: '20' },
      concurrent: { type: 'string', default: '10' },
      running: { type: 'string', default: '100' },
      /** berth at log level debug, and the median of each step its log lines time (profiling). */
      steps: { type: 'boolean', default: false },
      /** Comma-separated: which runtimes to measure (containerd only when installed). */
      targets: { type: 'string', default: 'berth,berth-noinfra,containerd' },
    },
  });
  const counts = {
    sequential: Number(values.sequential),
    concurrent: Number(values.concurrent),
    running: Number(values.running),
  };
  const work = await mkdtemp(join(tmpdir(), 'berth-bench-pod-'));
  const results: TargetResult[] = [];
  try {
    const images = await writeBenchImages(work);

    const runcFloor = await measureRuncFloor(20);
    // The floor runs the chain the runtimes below run (no per-pod ipMasq chain), not the
    // shipped default, whose ipMasq adds ~50 ms of iptables calls per ADD here.
    const floorConflist = join(work, 'floor.conflist');
    await writeFile(floorConflist, benchConflist('bfloor0', '10.230.0.0/16'));
    const cniFloor = await measureCniFloor(20, { conflist: floorConflist });
    console.log(
      table(
        ['floor', 'median', 'p95'],
        [['runc run -d', fmtMs(median(runcFloor)), fmtMs(percentile(runcFloor, 95))]],
      ),
    );
    console.log(formatCniFloor(cniFloor));

    const targets = new Set(values.targets.split(','));
    // berth as configured by default (every pod has an infra), then with runtime.drop_infra.
    const berthTargets = [
      { name: 'berth', toml: '', bridge: 'bbench0', subnet: '10.231.0.0/16' },
      {
        name: 'berth-noinfra',
        toml: '[runtime]\ndrop_infra = true\n',
        bridge: 'bbench1',
        subnet: '10.233.0.0/16',
      },
    ].filter((t) => targets.has(t.name));
    for (const variant of berthTargets) {
      const berthDir = join(work, variant.name);
      await mkdir(join(berthDir, 'cni'), { recursive: true });
      await writeFile(
        join(berthDir, 'cni', '10-bench.conflist'),
        benchConflist(variant.bridge, variant.subnet),
      );
      const berth = await startBerth({
        dir: berthDir,
        toml: variant.toml,
        args: values.steps ? [] : ['--log_level', 'warn'],
      });
      try {
        await runChecked(process.execPath, [
          BERTH_MAIN,
          'image',
          'import',
          images.workload,
          '--config',
          berth.configFile,
        ]);
        results.push(
          await measureTarget(
            {
              name: variant.name,
              cri: berth.cri,
              daemonPid: berth.process.pid!,
              monitorName: 'conmon',
              logDir: join(work, `logs-${variant.name}`),
            },
            counts,
          ),
        );
        if (values.steps) console.log(`${variant.name}:\n${stepMedians(berth.logs())}`);
      } finally {
        await berth.stop();
      }
    }

    if (targets.has('containerd') && containerdInstalled()) {
      const cniDir = join(work, 'containerd-cni');
      await mkdir(cniDir, { recursive: true });
      await writeFile(join(cniDir, '10-bench.conflist'), benchConflist('cbench0', '10.232.0.0/16'));
      const containerd = await startContainerd(join(work, 'containerd'), {
        sandboxImage: PAUSE_IMAGE,
        cniConfDir: cniDir,
        cniBinDir: CNI_BIN_DIR,
      });
      try {
        await containerd.importArchive(images.pause);
        await containerd.importArchive(images.workload);
        results.push(
          await measureTarget(
            {
              name: 'containerd',
              cri: containerd.cri,
              daemonPid: containerd.pid,
              monitorName: 'containerd-shim',
              logDir: join(work, 'logs-containerd'),
            },
            counts,
          ),
        );
      } finally {
        await containerd.stop();
      }
    } else if (targets.has('containerd')) {
      console.log('containerd not installed (apt-get install containerd): berth measured alone');
    }
    console.log(summarize(results));
  } finally {
    for (const bridge of ['bbench0', 'bbench1', 'cbench0']) {
      await runChecked('ip', ['link', 'del', bridge]).catch(() => undefined);
    }
    await rm(work, { recursive: true, force: true });
  }
}

await main();
