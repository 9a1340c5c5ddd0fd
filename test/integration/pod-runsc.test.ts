/**
 * A pod on runsc (Debian's gVisor): RunPodSandbox starts the infra as a
 * gVisor sandbox (runsc's own state says so) on the pod's network, and
 * StopPodSandbox/RemovePodSandbox leave neither runsc state nor netns.
 *
 * Not covered yet: a container joining the sandbox. runsc reports the
 * sandbox's pid for it, which is not conmon's child, so conmon records an
 * exit (-1) at once; berth needs a monitor that asks `runsc wait` for that.
 */
import { after, before, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NamespaceMode, PodSandboxConfig, PodSandboxState } from '../../src/generated/api.js';
import { listNetns } from '../../src/sandbox/network/index.js';
import { run } from '../../src/util/run.js';
import { startBerth, type RunningBerth } from '../helpers/berth-process.js';
import { cleanupBerth, writeBridgeConflist } from './container-fixture.js';

let work: string;
let berth: RunningBerth;
const bridge = `brs${randomBytes(4).toString('hex')}`;

before(async () => {
  work = await mkdtemp(join(tmpdir(), 'berth-runsc-'));
  const dir = join(work, 'berth');
  await writeBridgeConflist(join(dir, 'cni'), bridge, join(work, 'ipam'));
  berth = await startBerth({
    dir,
    toml: `
[runtime.handlers.runsc]
path = "/usr/bin/runsc"
runtime_args = ["--network=host"]
`,
  });
});

after(async () => {
  if (process.env.BERTH_TEST_LOGS) await writeFile(process.env.BERTH_TEST_LOGS, berth.logs());
  if (berth) await cleanupBerth(berth);
  await run('ip', ['link', 'del', bridge]);
  await rm(work, { recursive: true, force: true });
});

it('a runsc pod runs as a gVisor sandbox on its network and leaves nothing when removed', async () => {
  const rt = berth.cri.runtime;
  const pod = PodSandboxConfig.fromPartial({
    metadata: { name: 'gvisor', namespace: 'test', uid: randomBytes(8).toString('hex'), attempt: 0 },
    hostname: 'gvisor',
    logDirectory: join(work, 'logs', 'gvisor'),
    linux: {
      securityContext: {
        namespaceOptions: {
          network: NamespaceMode.POD,
          pid: NamespaceMode.CONTAINER,
          ipc: NamespaceMode.POD,
        },
      },
    },
  });
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
  const pods = (await rt.listPodSandbox({ filter: undefined })).items.filter((p) => p.id === podSandboxId);
  assert.deepEqual(pods, []);
});
