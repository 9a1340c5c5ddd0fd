/**
 * A pod on runsc (Debian's gVisor): RunPodSandbox starts the infra as a
 * gVisor sandbox (runsc's own state says so) on the pod's network, and
 * StopPodSandbox/RemovePodSandbox leave neither runsc state nor netns.
 * Containers join the sandbox under conmon through native/berth-runsc-shim:
 * their output reaches the CRI log, exit codes are recorded, exec and stop
 * work, a tty container gets a terminal, and one removed before its start
 * leaves no monitor behind.
 */
import { after, before, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NamespaceMode, PodSandboxConfig, PodSandboxState } from '../../src/generated/api.js';
import { listNetns } from '../../src/sandbox/network/index.js';
import { run } from '../../src/util/run.js';
import { startBerth, type RunningBerth } from '../helpers/berth-process.js';
import {
  POD_NAMESPACES,
  cleanupBerth,
  containerConfig,
  importImages,
  waitForState,
  writeBridgeConflist,
} from './container-fixture.js';
import { ContainerState } from '../../src/generated/api.js';
import { readFile } from 'node:fs/promises';

let work: string;
let berth: RunningBerth;
const RUNSC_TOML = `
[runtime.handlers.runsc]
path = "/usr/bin/runsc"
runtime_args = ["--network=host"]
`;
const bridge = `brs${randomBytes(4).toString('hex')}`;

before(async () => {
  work = await mkdtemp(join(tmpdir(), 'berth-runsc-'));
  const dir = join(work, 'berth');
  await writeBridgeConflist(join(dir, 'cni'), bridge, join(work, 'ipam'));
  berth = await startBerth({ dir, toml: RUNSC_TOML });
  await importImages(berth.configFile, work);
});

after(async () => {
  if (process.env.BERTH_TEST_LOGS) await writeFile(process.env.BERTH_TEST_LOGS, berth.logs());
  if (berth) await cleanupBerth(berth);
  await run('ip', ['link', 'del', bridge]);
  await rm(work, { recursive: true, force: true });
});

/** A pod with its own network (as kubelet sends it), logs under the test's work dir. */
function gvisorPod(name: string): PodSandboxConfig {
  return PodSandboxConfig.fromPartial({
    metadata: { name, namespace: 'test', uid: randomBytes(8).toString('hex'), attempt: 0 },
    hostname: name,
    logDirectory: join(work, 'logs', name),
    linux: { securityContext: { namespaceOptions: POD_NAMESPACES } },
  });
}

it('a runsc pod runs as a gVisor sandbox on its network and leaves nothing when removed', async () => {
  const rt = berth.cri.runtime;
  const pod = gvisorPod('gvisor');
  const { podSandboxId } = await rt.runPodSandbox({ config: pod, runtimeHandler: 'runsc' });
  const status = (await rt.podSandboxStatus({ podSandboxId, verbose: false })).status!;
  assert.equal(status.state, PodSandboxState.SANDBOX_READY);
  assert.equal(status.runtimeHandler, 'runsc');
  assert.match(status.network!.ip, /^10\.\d+\.\d+\.\d+$/);
  // runsc itself knows the infra as a running sandbox.
  const runscRoot = join(berth.dir, 'run', 'runtimes', 'runsc');
  const listed = async () => {
    const res = await run('/usr/bin/runsc', [`--root=${runscRoot}`, 'list', '-format', 'json']);
    assert.equal(res.code, 0, res.stderr);
    return (JSON.parse(res.stdout || '[]') ?? []) as { id: string; status: string }[];
  };
  const infra = (await listed()).find((c) => c.id === podSandboxId);
  assert.equal(infra?.status, 'running', JSON.stringify(await listed()));
  const netns = (await rt.podSandboxStatus({ podSandboxId, verbose: false })).status!.linux!.namespaces!
    .options;
  assert.equal(netns?.network, NamespaceMode.POD);

  await rt.stopPodSandbox({ podSandboxId });
  assert.equal(
    (await rt.podSandboxStatus({ podSandboxId, verbose: false })).status!.state,
    PodSandboxState.SANDBOX_NOTREADY,
  );
  await rt.removePodSandbox({ podSandboxId });
  assert.deepEqual(
    (await listed()).filter((c) => c.id === podSandboxId),
    [],
  );
  assert.deepEqual(await listNetns(join(berth.dir, 'run')), []);
  // Nothing of the sandbox stays in runsc's root either (state and lock files are per container).
  const leftInRoot = (await readdir(runscRoot)).filter((f) => f.includes(podSandboxId));
  assert.deepEqual(leftInRoot, [], `runsc root ${runscRoot}`);
  const pods = (await rt.listPodSandbox({ filter: undefined })).items.filter((p) => p.id === podSandboxId);
  assert.deepEqual(pods, []);
});

it('containers join a runsc pod sandbox under conmon: log, exit code, tty, exec, stop, remove or stop before start', async () => {
  const rt = berth.cri.runtime;
  const logDirectory = join(work, 'logs', 'gvisor-ctr');
  const pod = PodSandboxConfig.fromPartial({
    metadata: { name: 'gvisor-ctr', namespace: 'test', uid: randomBytes(8).toString('hex'), attempt: 0 },
    hostname: 'gvisor-ctr',
    logDirectory,
    linux: {
      securityContext: { namespaceOptions: { network: NamespaceMode.POD, pid: NamespaceMode.CONTAINER } },
    },
  });
  const { podSandboxId } = await rt.runPodSandbox({ config: pod, runtimeHandler: 'runsc' });
  const create = async (name: string, command: string[], tty = false) =>
    (
      await rt.createContainer({
        podSandboxId,
        config: containerConfig(name, {
          command,
          tty,
          logPath: `${name}.log`,
          linux: { securityContext: { namespaceOptions: { network: NamespaceMode.POD } } },
        }),
        sandboxConfig: pod,
      })
    ).containerId;

  // Runs inside gVisor (its own kernel version), writes both streams, exits 3.
  const job = await create('job', ['sh', '-c', 'uname -r; echo to-stderr >&2; sleep 1; exit 3']);
  await rt.startContainer({ containerId: job });
  const ended = await waitForState(berth, job, (s) => s.state === ContainerState.CONTAINER_EXITED, 30_000);
  assert.equal(ended.exitCode, 3);
  assert.equal(ended.reason, 'Error');
  const log = await readFile(join(logDirectory, 'job.log'), 'utf8');
  const hostKernel = (await readFile('/proc/sys/kernel/osrelease', 'utf8')).trim();
  const stdout = log.split('\n').find((l) => / stdout F /.test(l));
  assert.ok(stdout, log);
  assert.notEqual(
    stdout.split(' stdout F ')[1],
    hostKernel,
    'the container ran on gVisor, not the host kernel',
  );
  assert.match(log, /^\S+ stderr F to-stderr$/m);

  // With a terminal: runsc hands the container a host pty at create (conmon holds its
  // master), so terminal ioctls work inside gVisor (ttyname does not: the pty has no
  // name in the sandbox) and everything the process writes is one stream, stdout.
  const tty = await create(
    'tty',
    ['sh', '-c', 'stty -g && echo is-a-terminal; echo to-stderr >&2; exit 5'],
    true,
  );
  await rt.startContainer({ containerId: tty });
  const ttyEnded = await waitForState(berth, tty, (s) => s.state === ContainerState.CONTAINER_EXITED, 30_000);
  assert.equal(ttyEnded.exitCode, 5);
  const ttyLog = await readFile(join(logDirectory, 'tty.log'), 'utf8');
  assert.match(ttyLog, /^\S+ stdout F is-a-terminal\r?$/m);
  assert.match(ttyLog, /^\S+ stdout F to-stderr\r?$/m);
  assert.doesNotMatch(ttyLog, / stderr /);

  // A long-running one: exec, then StopContainer's SIGTERM is its recorded end.
  const server = await create('server', ['sleep', '3600']);
  await rt.startContainer({ containerId: server });
  await waitForState(berth, server, (s) => s.state === ContainerState.CONTAINER_RUNNING);
  const exec = await rt.execSync({
    containerId: server,
    cmd: ['sh', '-c', 'echo exec-out; exit 4'],
    timeout: 30n,
  });
  assert.equal(exec.exitCode, 4);
  assert.equal(Buffer.from(exec.stdout).toString(), 'exec-out\n');
  await rt.stopContainer({ containerId: server, timeout: 5n });
  const stopped = await waitForState(berth, server, (s) => s.state === ContainerState.CONTAINER_EXITED);
  assert.ok([137, 143].includes(stopped.exitCode), `exit ${stopped.exitCode}`);

  // Created, never started, removed: its monitor (the shim) goes away with it.
  const idle = await create('idle', ['sleep', '3600']);
  const shims = async () =>
    (await run('/usr/bin/pgrep', ['-f', `^\\S*/berth-runsc-shim .*${idle}`])).stdout
      .trim()
      .split('\n')
      .filter(Boolean);
  assert.equal((await shims()).length, 1, 'the shim monitors the created container');
  await rt.removeContainer({ containerId: idle });
  const deadline = Date.now() + 10_000;
  while ((await shims()).length > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  assert.deepEqual(await shims(), []);

  // Stopping the pod stops a container that was never started as well.
  const never = await create('never', ['sleep', '3600']);
  await rt.stopPodSandbox({ podSandboxId });
  assert.equal(
    (await rt.containerStatus({ containerId: never, verbose: false })).status!.state,
    ContainerState.CONTAINER_EXITED,
  );
  await rt.removePodSandbox({ podSandboxId });
  assert.deepEqual((await run('/usr/bin/pgrep', ['-f', '^\\S*/berth-runsc-shim '])).stdout.trim(), '');
  const runscRoot = join(berth.dir, 'run', 'runtimes', 'runsc');
  const leftInRoot = (await readdir(runscRoot)).filter((f) => f.includes(podSandboxId));
  assert.deepEqual(leftInRoot, [], `runsc root ${runscRoot}`);
});

it('a restart removes runsc lock files no record names, and keeps those of a running pod', async () => {
  const rt = berth.cri.runtime;
  const pod = gvisorPod('gvisor-restart');
  const { podSandboxId } = await rt.runPodSandbox({ config: pod, runtimeHandler: 'runsc' });
  const runscRoot = join(berth.dir, 'run', 'runtimes', 'runsc');
  // As a delete racing another runsc command leaves them (before berth removed them after each delete).
  const stale = ['0123456789ab_sandbox:0123456789ab.lock', '0123456789ab_sandbox:ba9876543210.lock'];
  const known = `${podSandboxId}_sandbox:not-yet-a-state.lock`;
  for (const name of [...stale, known]) await writeFile(join(runscRoot, name), '');
  await berth.stop();
  berth = await startBerth({ dir: berth.dir, toml: RUNSC_TOML });
  const left = await readdir(runscRoot);
  for (const name of stale)
    assert.ok(!left.includes(name), `${name} left in ${runscRoot}: ${left.join(' ')}`);
  assert.ok(left.includes(known), `${known} of a pod berth knows was removed`);
  assert.ok(left.includes(`${podSandboxId}_sandbox:${podSandboxId}.state`), left.join(' '));
  assert.match(berth.logs(), /removed stale runsc lock files/);
  const status = (await berth.cri.runtime.podSandboxStatus({ podSandboxId, verbose: false })).status!;
  assert.equal(status.state, PodSandboxState.SANDBOX_READY);
  await berth.cri.runtime.stopPodSandbox({ podSandboxId });
  await berth.cri.runtime.removePodSandbox({ podSandboxId });
  assert.deepEqual(
    (await readdir(runscRoot)).filter((f) => f.includes(podSandboxId)),
    [],
  );
});
