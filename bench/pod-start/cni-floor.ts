/**
 * The floor under any runtime's pod network set-up: a fresh persistent netns
 * (unshare + bind mount, as berth makes it) plus a CNI ADD of the shipped bridge chain
 * (deploy/cni/10-berth-bridge.conflist: bridge + host-local, portmap) and,
 * beside it as every CRI runtime does, the loopback plugin for `lo`; each
 * plugin executed directly with nothing else around it. The
 * same run also times berth's own path (createPodNetwork: version check
 * cache, per-network lock, attachment record) so its overhead shows.
 *
 * Each run uses its own bridge, subnet, host-local dir and run_root, and
 * removes them (and the netns and rules) afterwards.
 *
 * Run alone: node dist/bench/pod-start/cni-floor.js [runs]
 */
import { spawn } from 'node:child_process';
import { randomBytes, randomInt } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { BerthConfig } from '../../src/config/schema.js';
import { silentLogger } from '../../src/log.js';
import { createPodNetwork } from '../../src/sandbox/network/index.js';
import { createNetns, removeNetns } from '../../src/sandbox/network/netns.js';
import { findPlugin } from '../../src/sandbox/network/cni.js';
import { run } from '../../src/util/run.js';
import { fmtMs, median, msSince, percentile, table } from '../lib/stats.js';

const REPO = join(fileURLToPath(import.meta.url), '..', '..', '..', '..');
const DEFAULT_BIN_DIRS = ['/usr/lib/cni', '/opt/cni/bin'];

export interface CniFloorOptions {
  /** Where the CNI plugins are (default /usr/lib/cni, /opt/cni/bin). */
  binDirs?: string[];
  /** Conflist used as the template (default: the shipped deploy one). */
  conflist?: string;
  /** Also time berth's createPodNetwork path (default true). */
  berth?: boolean;
}

export interface CniFloorResult {
  /** netns + CNI ADD chain, bare (the floor), one sample per run in ms. */
  samples: number[];
  /** The netns part alone. */
  netnsMs: number[];
  /** The CNI ADD chain alone. */
  addMs: number[];
  /** netns + ADD through berth's PodNetwork (empty when options.berth is false). */
  berthMs: number[];
  /** Plugin chain measured, e.g. "bridge+portmap ‖ loopback". */
  chain: string;
}

function execPlugin(path: string, env: NodeJS.ProcessEnv, stdin: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(path, [], { env, stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.once('error', reject);
    child.once('close', (code) =>
      code === 0
        ? resolve(out)
        : reject(new Error(`${path} ${env.CNI_COMMAND}: exit ${code}: ${out} ${err}`)),
    );
    child.stdin.end(stdin);
  });
}

interface Plugin {
  path: string;
  conf: Record<string, unknown>;
}

/** ADD (or DEL, reversed) straight through the chain: the least any runtime must do. */
async function bareChain(
  command: 'ADD' | 'DEL',
  plugins: Plugin[],
  list: { name: string; cniVersion: string },
  id: string,
  netns: string,
  binDirs: string[],
  ifName = 'eth0',
): Promise<void> {
  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH,
    CNI_COMMAND: command,
    CNI_CONTAINERID: id,
    CNI_NETNS: netns,
    CNI_IFNAME: ifName,
    CNI_PATH: binDirs.join(':'),
    CNI_ARGS: `IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;K8S_POD_NAME=${id};K8S_POD_INFRA_CONTAINER_ID=${id}`,
  };
  let prevResult: unknown;
  const order = command === 'ADD' ? plugins : [...plugins].reverse();
  for (const plugin of order) {
    const conf: Record<string, unknown> = { ...plugin.conf, name: list.name, cniVersion: list.cniVersion };
    if (prevResult !== undefined && command === 'ADD') conf.prevResult = prevResult;
    const out = await execPlugin(plugin.path, env, JSON.stringify(conf));
    if (command === 'ADD') prevResult = JSON.parse(out) as unknown;
  }
}

/**
 * Runs `runs` netns + CNI ADD pairs one after another (each torn down before
 * the next, untimed) and returns the samples. The first bare run warms the
 * bridge up and is not counted.
 */
export async function measureCniFloor(runs = 20, options: CniFloorOptions = {}): Promise<CniFloorResult> {
  const binDirs = options.binDirs ?? DEFAULT_BIN_DIRS;
  const tag = randomBytes(3).toString('hex');
  const bridge = `bb${tag}`;
  const subnet = `10.${randomInt(200, 251)}.${randomInt(0, 256)}.0/24`;
  const dir = await mkdtemp(join(tmpdir(), 'berth-bench-cni-'));
  const list = JSON.parse(
    await readFile(options.conflist ?? join(REPO, 'deploy/cni/10-berth-bridge.conflist'), 'utf8'),
  ) as { name: string; cniVersion: string; plugins: Record<string, unknown>[] };
  list.name = `berth-bench-${tag}`;
  for (const plugin of list.plugins) {
    if (plugin.type !== 'bridge') continue;
    plugin.bridge = bridge;
    plugin.ipam = {
      type: 'host-local',
      dataDir: join(dir, 'ipam'),
      routes: [{ dst: '0.0.0.0/0' }],
      ranges: [[{ subnet }]],
    };
  }
  const confDir = join(dir, 'conf');
  await mkdir(confDir, { recursive: true });
  await writeFile(join(confDir, '10-bench.conflist'), JSON.stringify(list));
  const plugins: Plugin[] = [];
  for (const conf of list.plugins) plugins.push({ path: await findPlugin(String(conf.type), binDirs), conf });
  const loopback: Plugin[] = list.plugins.some((p) => p.type === 'loopback')
    ? []
    : [{ path: await findPlugin('loopback', binDirs), conf: { type: 'loopback' } }];
  const runRoot = join(dir, 'run');
  const result: CniFloorResult = {
    samples: [],
    netnsMs: [],
    addMs: [],
    berthMs: [],
    chain: list.plugins.map((p) => String(p.type)).join('+') + (loopback.length ? ' ‖ loopback' : ''),
  };
  const config = {
    run_root: runRoot,
    network: { cni_conf_dir: confDir, cni_bin_dirs: binDirs, network_name: '' },
  } as unknown as BerthConfig;
  const network = createPodNetwork(() => config, silentLogger);
  try {
    // Bare and berth runs alternate so both see the same machine load; run -1 warms up.
    for (let i = -1; i < runs; i++) {
      const id = `bare${tag}${i + 1}`;
      const start = process.hrtime.bigint();
      const netns = await createNetns(runRoot, id);
      const netnsDone = msSince(start);
      const addStart = process.hrtime.bigint();
      try {
        await Promise.all([
          bareChain('ADD', plugins, list, id, netns, binDirs),
          loopback.length ? bareChain('ADD', loopback, list, id, netns, binDirs, 'lo') : undefined,
        ]);
        const total = msSince(start);
        if (i >= 0) {
          result.netnsMs.push(netnsDone);
          result.addMs.push(msSince(addStart));
          result.samples.push(total);
        }
      } finally {
        await bareChain('DEL', plugins, list, id, netns, binDirs).catch(() => undefined);
        await removeNetns(netns);
      }
      if (options.berth === false) continue;
      const pod = {
        id: `berth${tag}${i + 1}`,
        name: `bench-${i + 1}`,
        namespace: 'bench',
        uid: `uid-${i + 1}`,
      };
      const berthStart = process.hrtime.bigint();
      const berthNetns = await network.createNetns(pod.id);
      try {
        await network.attach(pod, berthNetns, []);
        if (i >= 0) result.berthMs.push(msSince(berthStart));
      } finally {
        await network.detach(pod, berthNetns, [], undefined).catch(() => undefined);
        await network.removeNetns(berthNetns);
      }
    }
  } finally {
    await run('ip', ['link', 'del', bridge]);
    await rm(dir, { recursive: true, force: true });
  }
  return result;
}

/** A table of the result, in the style of the other benchmarks. */
export function formatCniFloor(result: CniFloorResult): string {
  const row = (what: string, samples: number[]) => [
    what,
    String(samples.length),
    fmtMs(median(samples)),
    fmtMs(percentile(samples, 95)),
  ];
  const rows = [
    row('netns (new + bind-mounted)', result.netnsMs),
    row(`CNI ADD (${result.chain})`, result.addMs),
    row('netns + CNI ADD (floor)', result.samples),
  ];
  if (result.berthMs.length) rows.push(row('netns + ADD via berth PodNetwork', result.berthMs));
  return table(['step', 'runs', 'median', 'p95'], rows);
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const runs = Number(process.argv[2] ?? 20);
  console.log(formatCniFloor(await measureCniFloor(runs)));
}
