/**
 * Runs cri-tools' `critest` against a real berth: a local docker-registry
 * holding busybox stand-ins for every image critest pulls, berth with mirrors
 * sending registry.k8s.io, gcr.io, k8s.gcr.io, docker.io and public.ecr.aws
 * there (mirror_only: nothing leaves the machine), its own CNI bridge and
 * subnet and streaming port. Afterwards it removes what is left — pods,
 * berth, processes, mounts, the bridge, CNI iptables rules, the registry —
 * and reports each leftover it had to remove (a leftover is a bug).
 *
 * Used by critest.test.ts (npm test) and run.ts (by hand).
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createWriteStream, existsSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, readFile, readdir, readlink, rm, rmdir, writeFile } from 'node:fs/promises';
import { delimiter, join } from 'node:path';
import { tmpdir } from 'node:os';
import { startBerth, type RunningBerth } from '../helpers/berth-process.js';
import { startRegistry, type TestRegistry } from '../helpers/registry.js';
import { run } from '../../src/util/run.js';
import { buildStandIns, pushStandIns, MIRRORED_REGISTRIES } from './images.js';

/** Specs this machine cannot run: no AppArmor in the kernel; an upstream-pinned digest. */
export const DEFAULT_SKIPS = ['AppArmor', 'public image with digest should be pulled and removed'];

/** critest from $CRITEST or PATH; undefined when there is none. */
export function findCritest(): string | undefined {
  const fromEnv = process.env.CRITEST;
  if (fromEnv) return existsSync(fromEnv) ? fromEnv : undefined;
  for (const d of (process.env.PATH ?? '').split(delimiter)) {
    if (d && existsSync(join(d, 'critest'))) return join(d, 'critest');
  }
  return undefined;
}

export interface CritestOptions {
  critest: string;
  /** Run `critest -benchmark` instead of the validation suite. */
  benchmark?: boolean;
  /** --ginkgo.focus regular expressions. */
  focus?: string[];
  /** --ginkgo.skip regular expressions (default DEFAULT_SKIPS). */
  skip?: string[];
  /** Further critest arguments. */
  extraArgs?: string[];
  /** Echo critest's output here as it runs (e.g. process.stdout). */
  echo?: NodeJS.WritableStream;
  /** Keep the work directory (logs, report) instead of removing it. */
  keep?: boolean;
  /** Overall limit for the critest process. */
  timeoutMs?: number;
}

export interface SpecResult {
  name: string;
  state: string;
  /** Failure or skip message. */
  message: string;
  location: string;
  seconds: number;
}

export interface CritestResult {
  critestVersion: string;
  exitCode: number | null;
  passed: SpecResult[];
  failed: SpecResult[];
  /** Skipped by the spec itself (runtime or host lacks a feature), with the reason. */
  skippedBySpec: SpecResult[];
  /** Not run because of --ginkgo.skip/--ginkgo.focus. */
  filtered: SpecResult[];
  /** Objects the run left behind, which the harness removed. */
  leftovers: string[];
  /** Benchmark result files (benchmark mode). */
  benchmarkFiles: Record<string, string>;
  workDir: string;
  /** critest's whole output. */
  output: string;
  berthLogTail: string;
}

interface GinkgoSpecReport {
  ContainerHierarchyTexts?: string[] | null;
  LeafNodeType?: string;
  LeafNodeText?: string;
  State?: string;
  RunTime?: number;
  Failure?: { Message?: string; Location?: { FileName?: string; LineNumber?: number } };
}

interface GinkgoSuiteReport {
  SpecReports?: GinkgoSpecReport[] | null;
}

const FAILED_STATES = new Set(['failed', 'panicked', 'interrupted', 'aborted', 'timedout']);

export function parseGinkgoReport(
  json: string,
): Pick<CritestResult, 'passed' | 'failed' | 'skippedBySpec' | 'filtered'> {
  const suites = JSON.parse(json) as GinkgoSuiteReport[];
  const out = {
    passed: [] as SpecResult[],
    failed: [] as SpecResult[],
    skippedBySpec: [] as SpecResult[],
    filtered: [] as SpecResult[],
  };
  for (const suite of suites) {
    for (const spec of suite.SpecReports ?? []) {
      if (spec.LeafNodeType !== 'It') {
        // A failing BeforeSuite/AfterSuite fails the run as a whole.
        if (spec.State && FAILED_STATES.has(spec.State)) {
          out.failed.push(toResult(spec, `[${spec.LeafNodeType ?? 'node'}]`));
        }
        continue;
      }
      const r = toResult(spec);
      if (spec.State === 'passed') out.passed.push(r);
      else if (spec.State === 'skipped' || spec.State === 'pending') {
        (r.message ? out.skippedBySpec : out.filtered).push(r);
      } else out.failed.push(r);
    }
  }
  return out;
}

function toResult(spec: GinkgoSpecReport, fallbackName = ''): SpecResult {
  const name = [...(spec.ContainerHierarchyTexts ?? []), spec.LeafNodeText ?? ''].join(' ').trim();
  const loc = spec.Failure?.Location;
  return {
    name: name || fallbackName,
    state: spec.State ?? 'unknown',
    message: (spec.Failure?.Message ?? '').trim(),
    location: loc?.FileName
      ? `${loc.FileName.replace(/^.*\/cri-tools[^/]*\//, '')}:${loc.LineNumber ?? 0}`
      : '',
    seconds: (spec.RunTime ?? 0) / 1e9,
  };
}

/** A CNI network of its own: bridge, subnet and IPAM store no other test shares. */
function cniConfig(name: string, bridge: string, subnet: string, ipamDir: string): string {
  return JSON.stringify(
    {
      cniVersion: '1.0.0',
      name,
      plugins: [
        {
          type: 'bridge',
          bridge,
          isGateway: true,
          ipMasq: true,
          hairpinMode: true,
          ipam: {
            type: 'host-local',
            dataDir: ipamDir,
            routes: [{ dst: '0.0.0.0/0' }],
            ranges: [[{ subnet }]],
          },
        },
        { type: 'portmap', capabilities: { portMappings: true } },
        { type: 'loopback' },
      ],
    },
    null,
    2,
  );
}

function berthToml(registryHost: string): string {
  const lines = ['[streaming]', 'address = "127.0.0.1"', 'port = 0', ''];
  for (const host of MIRRORED_REGISTRIES) {
    lines.push(`[image.registries."${host}"]`, `mirrors = ["${registryHost}"]`, 'mirror_only = true', '');
  }
  lines.push(`[image.registries."${registryHost}"]`, 'insecure = true', '');
  return lines.join('\n');
}

async function critestVersion(critest: string): Promise<string> {
  const r = await run(critest, ['--version'], { timeoutMs: 20_000 });
  return (r.stdout + r.stderr).trim().split('\n')[0] ?? '';
}

/** Mount points under `dir`, deepest first. */
async function mountsUnder(dir: string): Promise<string[]> {
  const info = await readFile('/proc/self/mountinfo', 'utf8');
  const points = info
    .split('\n')
    .map((l) => l.split(' ')[4])
    .filter((p): p is string => !!p)
    .map((p) => p.replace(/\\(\d{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8))))
    .filter((p) => p === dir || p.startsWith(`${dir}/`));
  return [...new Set(points)].sort((a, b) => b.length - a.length);
}

/** The 64-hex pod and container IDs berth's log names. */
export function idsInLog(log: string): Set<string> {
  return new Set([...log.matchAll(/"(?:id|podId|container|sandbox)":"([0-9a-f]{64})"/g)].map((m) => m[1]));
}

/**
 * Processes of this run: command line or cwd under `dir` (conmon, runc), or in
 * a cgroup named after one of berth's pod or container IDs (the containers).
 */
async function processesUnder(dir: string, ids: Set<string>): Promise<{ pid: number; cmd: string }[]> {
  const out: { pid: number; cmd: string }[] = [];
  for (const name of await readdir('/proc')) {
    if (!/^\d+$/.test(name) || Number(name) === process.pid) continue;
    try {
      const cmd = (await readFile(`/proc/${name}/cmdline`, 'utf8')).split('\0').join(' ').trim();
      let cwd = '';
      let cgroup = '';
      try {
        cwd = await readlink(`/proc/${name}/cwd`);
        cgroup = await readFile(`/proc/${name}/cgroup`, 'utf8');
      } catch {
        // kernel threads, exited processes
      }
      const inPodCgroup = [...cgroup.matchAll(/[0-9a-f]{64}/g)].some((m) => ids.has(m[0]));
      if (cmd.includes(dir) || cwd.startsWith(dir) || inPodCgroup) out.push({ pid: Number(name), cmd });
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

/** cgroup directories (any hierarchy, up to 3 levels down) named after one of `ids`, deepest first. */
async function cgroupsOf(ids: Set<string>): Promise<string[]> {
  const found: string[] = [];
  const walk = async (path: string, depth: number) => {
    let names: string[];
    try {
      names = (await readdir(path, { withFileTypes: true }))
        .filter((d) => d.isDirectory())
        .map((d) => d.name);
    } catch {
      return;
    }
    for (const name of names) {
      const child = join(path, name);
      const m = /[0-9a-f]{64}/.exec(name);
      if (m && ids.has(m[0])) found.push(child);
      if (depth < 3) await walk(child, depth + 1);
    }
  };
  await walk('/sys/fs/cgroup', 0);
  return found.sort((a, b) => b.length - a.length);
}

/** Removes iptables rules (nat and filter) that name our CNI network; returns how many. */
async function removeCniRules(network: string): Promise<string[]> {
  const removed: string[] = [];
  for (const table of ['nat', 'filter']) {
    const r = await run('/usr/sbin/iptables', ['-t', table, '-S'], { timeoutMs: 20_000 });
    if (r.code !== 0) continue;
    for (const line of r.stdout.split('\n')) {
      if (!line.startsWith('-A ') || !line.includes(`name: \\"${network}\\"`)) continue;
      const args = splitRule(line.slice(3));
      const del = await run('/usr/sbin/iptables', ['-t', table, '-D', ...args], { timeoutMs: 20_000 });
      if (del.code === 0) removed.push(`iptables -t ${table} ${line}`);
    }
  }
  return removed;
}

/** Splits an `iptables -S` rule into arguments ("quoted \"strings\"" kept whole). */
export function splitRule(rule: string): string[] {
  const args: string[] = [];
  let cur = '';
  let quoted = false;
  let inArg = false;
  for (let i = 0; i < rule.length; i++) {
    const c = rule[i];
    if (quoted) {
      if (c === '\\' && i + 1 < rule.length) cur += rule[++i];
      else if (c === '"') quoted = false;
      else cur += c;
    } else if (c === '"') {
      quoted = true;
      inArg = true;
    } else if (c === ' ') {
      if (inArg) args.push(cur);
      cur = '';
      inArg = false;
    } else {
      cur += c;
      inArg = true;
    }
  }
  if (inArg) args.push(cur);
  return args;
}

/** System V shared memory ids present now (critest's HostIpc specs make segments with ipcmk). */
async function shmIds(): Promise<Set<string>> {
  try {
    const text = await readFile('/proc/sysvipc/shm', 'utf8');
    return new Set(
      text
        .split('\n')
        .slice(1)
        .map((l) => l.trim().split(/\s+/)[1])
        .filter((id): id is string => !!id),
    );
  } catch {
    return new Set();
  }
}

/**
 * Waits until berth's pod and container lists stop changing: critest may exit
 * with RPCs still in flight (the benchmark's parallel samplers), and those
 * finish on berth's side after the client has gone.
 */
async function settle(berth: RunningBerth): Promise<void> {
  const snapshot = async () => {
    const pods = (await berth.cri.runtime.listPodSandbox({ filter: undefined })).items.map((p) => p.id);
    const ctrs = (await berth.cri.runtime.listContainers({ filter: undefined })).containers.map((c) => c.id);
    return JSON.stringify([pods.sort(), ctrs.sort()]);
  };
  let last = await snapshot();
  for (let i = 0; i < 30; i++) {
    await new Promise((r) => setTimeout(r, 1000));
    const now = await snapshot();
    if (now === last) return;
    last = now;
  }
}

/** Stops and removes every pod and container berth still has; returns their names. */
async function removeAllPods(berth: RunningBerth): Promise<string[]> {
  await settle(berth);
  const left: string[] = [];
  const { containers } = await berth.cri.runtime.listContainers({ filter: undefined });
  for (const c of containers) {
    left.push(`container ${c.metadata?.name ?? c.id} (${c.id.slice(0, 12)}, state ${c.state})`);
    await berth.cri.runtime.stopContainer({ containerId: c.id, timeout: 0n }).catch(() => undefined);
    await berth.cri.runtime.removeContainer({ containerId: c.id }).catch(() => undefined);
  }
  const { items } = await berth.cri.runtime.listPodSandbox({ filter: undefined });
  for (const p of items) {
    left.push(`pod ${p.metadata?.name ?? p.id} (${p.id.slice(0, 12)}, state ${p.state})`);
    await berth.cri.runtime.stopPodSandbox({ podSandboxId: p.id }).catch(() => undefined);
    await berth.cri.runtime.removePodSandbox({ podSandboxId: p.id }).catch(() => undefined);
  }
  return left;
}

/** Median and p95 per operation of critest's benchmark JSON files (LifecycleBenchmarksResultsSet). */
export function summarizeBenchmarks(files: Record<string, string>): string[] {
  const lines: string[] = [];
  for (const [name, text] of Object.entries(files).sort()) {
    let data: { operationsNames?: string[]; datapoints?: { operationsDurationsNs?: number[] }[] };
    try {
      data = JSON.parse(text) as typeof data;
    } catch {
      lines.push(`${name}: not JSON`);
      continue;
    }
    const ops = data.operationsNames ?? [];
    const points = data.datapoints ?? [];
    const parts = ops.map((op, i) => {
      const v = points
        .map((p) => p.operationsDurationsNs?.[i])
        .filter((x): x is number => typeof x === 'number')
        .sort((a, b) => a - b);
      if (v.length === 0) return `${op} -`;
      const at = (q: number) => (v[Math.min(v.length - 1, Math.floor(q * v.length))] / 1e6).toFixed(1);
      return `${op} ${at(0.5)}/${at(0.95)} ms`;
    });
    lines.push(
      `${name.replace(/_benchmark_data\.json$/, '')} (${points.length} samples, median/p95): ${parts.join(', ')}`,
    );
  }
  return lines;
}

// containersNumberParallel stays 1: critest's container sampler with more than
// one worker returns before its last samples stop and remove their pods.
const BENCHMARK_PARAMS = [
  'containersNumber: 20',
  'containersNumberParallel: 1',
  'containerBenchmarkTimeoutSeconds: 60',
  'podsNumber: 20',
  'podsNumberParallel: 2',
  'podBenchmarkTimeoutSeconds: 60',
  'imagesNumber: 10',
  'imagesNumberParallel: 2',
  'imageBenchmarkTimeoutSeconds: 60',
  'podContainerStartBenchmarkTimeoutSeconds: 60',
  '',
].join('\n');

export async function runCritest(options: CritestOptions): Promise<CritestResult> {
  // Short paths: conmon's attach socket lives at <run_root>/attach/<64 hex>/attach and a
  // unix socket path holds at most 107 bytes (deployments use /run/berth).
  const workDir = await mkdtemp(join(tmpdir(), 'bct-'));
  // Searchable by others (mkdtemp makes 0700): a pod in its own user namespace reaches
  // its root filesystem under here as an unprivileged host ID, and berth reports user
  // namespaces only where that works (the UserNamespaces specs skip otherwise).
  await chmod(workDir, 0o711);
  const suffix = randomBytes(3).toString('hex');
  const network = `critest-${suffix}`;
  const bridge = `bct${suffix}`;
  const subnet = `10.${200 + (randomBytes(1)[0] % 50)}.${randomBytes(1)[0]}.0/24`;
  const berthDir = join(workDir, 'b');
  const reportFile = join(workDir, 'critest-report.json');
  const benchDir = join(workDir, 'benchmarks');
  const leftovers: string[] = [];
  let registry: TestRegistry | undefined;
  let berth: RunningBerth | undefined;
  let output = '';
  let exitCode: number | null | undefined = undefined;
  let berthLogTail = '';
  const shmBefore = await shmIds();
  const critestVersionText = await critestVersion(options.critest);
  try {
    registry = await startRegistry();
    await pushStandIns(registry.url, await buildStandIns());

    await mkdir(join(berthDir, 'cni'), { recursive: true });
    await writeFile(
      join(berthDir, 'cni', '10-critest.conflist'),
      cniConfig(network, bridge, subnet, join(workDir, 'cni-ipam')),
    );
    berth = await startBerth({ dir: berthDir, toml: berthToml(registry.host) });

    const endpoint = `unix://${berth.socket}`;
    const args = [
      `--runtime-endpoint=${endpoint}`,
      `--image-endpoint=${endpoint}`,
      '--ginkgo.no-color',
      // benchmark mode sets its own reporter verbosity; a second one is refused
      ...(options.benchmark ? [] : ['--ginkgo.v']),
      `--ginkgo.json-report=${reportFile}`,
      '--ginkgo.timeout=3h',
    ];
    for (const s of options.skip ?? DEFAULT_SKIPS) args.push(`--ginkgo.skip=${s}`);
    for (const f of options.focus ?? []) args.push(`--ginkgo.focus=${f}`);
    if (options.benchmark) {
      await mkdir(benchDir, { recursive: true });
      await writeFile(join(workDir, 'benchmark-params.yaml'), BENCHMARK_PARAMS);
      args.push(
        '-benchmark',
        `--benchmarking-params-file=${join(workDir, 'benchmark-params.yaml')}`,
        `--benchmarking-output-dir=${benchDir}`,
      );
    }
    args.push(...(options.extraArgs ?? []));
    const log = createWriteStream(join(workDir, 'critest.log'));
    const child = spawn(options.critest, args, { cwd: workDir, stdio: ['ignore', 'pipe', 'pipe'] });
    const onData = (d: Buffer) => {
      output += d.toString();
      log.write(d);
      options.echo?.write(d);
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    const timer = setTimeout(() => child.kill('SIGTERM'), options.timeoutMs ?? 3 * 3600_000);
    exitCode = await new Promise<number | null>((resolve, reject) => {
      child.once('error', reject);
      child.once('close', (code) => resolve(code));
    });
    clearTimeout(timer);
    await new Promise<void>((resolve) => log.end(resolve));
  } finally {
    if (berth) {
      try {
        for (const l of await removeAllPods(berth)) leftovers.push(`berth still had ${l}`);
      } catch (err) {
        leftovers.push(`could not list berth's pods at the end: ${String(err)}`);
      }
      const logs = berth.logs();
      berthLogTail = logs.slice(-20_000);
      await writeFile(join(workDir, 'berth.log'), logs).catch(() => undefined);
      const code = await berth.stop();
      if (code !== 0) leftovers.push(`berth exited with ${code} on SIGTERM`);
    }
    const ids = idsInLog(berth?.logs() ?? '');
    const strays = await processesUnder(berthDir, ids);
    for (const p of strays) {
      leftovers.push(`process ${p.pid}: ${p.cmd.slice(0, 160)}`);
      try {
        process.kill(p.pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    if (strays.length) await new Promise((r) => setTimeout(r, 500));
    for (const c of await cgroupsOf(ids)) {
      leftovers.push(`cgroup ${c}`);
      await rmdir(c).catch(() => undefined);
    }
    for (const m of await mountsUnder(workDir)) {
      leftovers.push(`mount ${m}`);
      await run('/usr/bin/umount', ['-l', m], { timeoutMs: 20_000 });
    }
    const link = await run('/usr/sbin/ip', ['link', 'show', bridge], { timeoutMs: 10_000 });
    // The bridge plugin makes the bridge and never deletes it (as with CRI-O): not a leak.
    if (link.code === 0) await run('/usr/sbin/ip', ['link', 'del', bridge], { timeoutMs: 10_000 });
    for (const r of await removeCniRules(network)) leftovers.push(`${r} (CNI DEL missed)`);
    for (const id of await shmIds()) {
      if (!shmBefore.has(id)) await run('/usr/bin/ipcrm', ['-m', id], { timeoutMs: 10_000 });
    }
    await registry?.stop();
    // Set-up failures (no report) leave nothing either, unless asked to keep it.
    if (exitCode === undefined && !options.keep) await rm(workDir, { recursive: true, force: true });
  }

  let parsed: ReturnType<typeof parseGinkgoReport> = {
    passed: [],
    failed: [],
    skippedBySpec: [],
    filtered: [],
  };
  try {
    parsed = parseGinkgoReport(await readFile(reportFile, 'utf8'));
  } catch (err) {
    parsed.failed.push({
      name: '[critest report]',
      state: 'missing',
      message: `no JSON report (${String(err)}); critest exited with ${exitCode}`,
      location: '',
      seconds: 0,
    });
  }
  const benchmarkFiles: Record<string, string> = {};
  if (options.benchmark && existsSync(benchDir)) {
    for (const f of await readdir(benchDir)) benchmarkFiles[f] = await readFile(join(benchDir, f), 'utf8');
  }
  if (!options.keep) await rm(workDir, { recursive: true, force: true });
  return {
    critestVersion: critestVersionText,
    exitCode: exitCode ?? null,
    ...parsed,
    leftovers,
    benchmarkFiles,
    workDir,
    output,
    berthLogTail,
  };
}

/** Human summary: counts, failed specs with their first message line, skips with reasons, leftovers. */
export function formatSummary(r: CritestResult): string {
  const lines = [
    `${r.critestVersion}: ${r.passed.length} passed, ${r.failed.length} failed, ` +
      `${r.skippedBySpec.length} skipped by the spec, ${r.filtered.length} not selected (critest exit ${r.exitCode})`,
  ];
  if (r.failed.length) {
    lines.push('Failed:');
    for (const f of r.failed) {
      const first = f.message.split('\n').find((l) => l.trim()) ?? '';
      lines.push(`  - ${f.name}${f.location ? ` [${f.location}]` : ''}`, `      ${first.slice(0, 300)}`);
    }
  }
  if (r.skippedBySpec.length) {
    lines.push('Skipped by the spec:');
    for (const s of r.skippedBySpec) lines.push(`  - ${s.name}: ${s.message.split('\n')[0]}`);
  }
  const bench = summarizeBenchmarks(r.benchmarkFiles);
  if (bench.length) lines.push('Benchmarks:', ...bench.map((b) => `  ${b}`));
  if (r.leftovers.length) {
    lines.push('Left behind (removed by the harness):');
    for (const l of r.leftovers) lines.push(`  - ${l}`);
  }
  return lines.join('\n');
}
