import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmod, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connectCri } from '../helpers/cri-client.js';
import { podConfig, startEnv } from './container-fixture.js';

async function mountsUnder(dir: string): Promise<string[]> {
  const info = await readFile('/proc/self/mountinfo', 'utf8');
  return info
    .split('\n')
    .map((line) => line.split(' ')[4])
    .filter((point): point is string => !!point && point.startsWith(dir));
}

/** A bridge plugin that takes its time, so SIGTERM lands in the middle of the pod's CNI ADD. */
async function slowPluginDir(work: string): Promise<string> {
  const dir = join(work, 'cni-bin');
  await mkdir(dir, { recursive: true });
  const plugin = join(dir, 'slowbridge');
  await writeFile(
    plugin,
    '#!/bin/sh\nif [ "$CNI_COMMAND" = ADD ]; then sleep 1.5; fi\nexec /usr/lib/cni/bridge\n',
  );
  await chmod(plugin, 0o755);
  return dir;
}

test('SIGTERM while a RunPodSandbox whose client left is half-way: it finishes before berth exits', async () => {
  const binRoot = await mkdtemp(join(tmpdir(), 'berth-drain-bin-'));
  const binDir = await slowPluginDir(binRoot);
  const env = await startEnv('drain', `cni_bin_dirs = ["${binDir}", "/usr/lib/cni"]\n`);
  try {
    const confDir = join(env.berth.dir, 'cni');
    const [existing] = (await readdir(confDir)).filter((f) => f.endsWith('.conflist'));
    const conf = JSON.parse(await readFile(join(confDir, existing), 'utf8')) as {
      plugins: { type: string }[];
    };
    conf.plugins[0].type = 'slowbridge';
    await writeFile(join(confDir, existing), JSON.stringify(conf));
    const client = connectCri(env.berth.socket);
    const config = podConfig(env.work, { hostNetwork: false });
    const call = client.rawRuntime.runPodSandbox({ config, runtimeHandler: '' }, () => undefined);
    await new Promise((r) => setTimeout(r, 400));
    // The client gives up and goes away (as critest does when it exits), then the daemon is told to stop.
    call.cancel();
    client.close();
    const code = await env.berth.stop();
    assert.equal(code, 0);
    assert.doesNotMatch(env.berth.logs(), /handlers still running/);

    // What berth left on disk must be consistent: mounts only for a committed, ready pod.
    const stateDir = join(env.berth.dir, 'root', 'state', 'sandboxes');
    const records = await Promise.all(
      (await readdir(stateDir).catch(() => [] as string[]))
        .filter((f) => f.endsWith('.json'))
        .map(
          async (f) => JSON.parse(await readFile(join(stateDir, f), 'utf8')) as { id: string; phase: string },
        ),
    );
    const mounts = await mountsUnder(env.berth.dir);
    const ready = records.filter((r) => r.phase === 'ready');
    assert.equal(records.length, ready.length, `no half-made pod record: ${JSON.stringify(records)}`);
    if (ready.length === 0) assert.deepEqual(mounts, [], 'no pod, no mounts');
    else
      assert.ok(
        mounts.some((m) => m.includes(ready[0].id)),
        'the ready pod has its mounts',
      );
  } finally {
    // Restarts berth so cleanup can remove the pod through the CRI.
    const { startBerth } = await import('../helpers/berth-process.js');
    env.berth = await startBerth({ dir: env.berth.dir });
    await env.cleanup();
    await rm(binRoot, { recursive: true, force: true });
  }
});
