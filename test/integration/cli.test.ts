import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile, appendFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BERTH_MAIN, startBerth } from '../helpers/berth-process.js';

function berthCli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [BERTH_MAIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

test('berth --help and each command --help', async () => {
  const top = await berthCli(['--help']);
  assert.equal(top.code, 0);
  for (const command of ['serve', 'config', 'version', 'image import'])
    assert.match(top.stdout, new RegExp(command));
  for (const args of [
    ['serve', '--help'],
    ['config', '--help'],
    ['version', '--help'],
    ['image', 'import', '--help'],
  ]) {
    const res = await berthCli(args);
    assert.equal(res.code, 0, args.join(' '));
    assert.match(res.stdout, /^Usage: berth /, args.join(' '));
  }
  const bad = await berthCli(['frobnicate']);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /unknown command 'frobnicate'/);
});

test('berth version prints the package version', async () => {
  const res = await berthCli(['version']);
  assert.equal(res.code, 0);
  assert.match(res.stdout, /^berth \d+\.\d+\.\d+\nCRI API v1/);
});

test('berth config prints the effective config with flags applied', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'berth-cli-'));
  try {
    const file = join(dir, 'berth.toml');
    await writeFile(file, '[server]\nsocket = "/tmp/from-file.sock"\n');
    const res = await berthCli(['config', '--config', file, '--log_level', 'warn']);
    assert.equal(res.code, 0, res.stderr);
    assert.match(res.stdout, /socket = "\/tmp\/from-file\.sock"/);
    assert.match(res.stdout, /log_level = "warn"/);
    assert.match(res.stdout, /\[runtime\.handlers\.runc\]/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('an unknown key or a bad flag stops start-up with a clear error', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'berth-cli-'));
  try {
    const file = join(dir, 'berth.toml');
    await writeFile(file, '[server]\nport = 1\n');
    const res = await berthCli(['serve', '--config', file]);
    assert.equal(res.code, 1);
    assert.equal(res.stderr.trim(), `berth: ${file}: unknown key "server.port"`);
    const flag = await berthCli(['serve', '--config', file, '--server.nope', 'x']);
    assert.equal(flag.code, 2);
    assert.match(flag.stderr, /unknown flag --server\.nope/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('SIGHUP reloads reloadable settings and logs what changed; SIGTERM exits 0', async () => {
  const berth = await startBerth();
  try {
    await appendFile(berth.configFile, '\n[image]\npinned_images = ["docker.io/library/busybox:latest"]\n');
    berth.process.kill('SIGHUP');
    const deadline = Date.now() + 10_000;
    while (!/configuration reloaded/.test(berth.logs()) && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50));
    }
    const line = berth
      .logs()
      .split('\n')
      .find((l) => l.includes('configuration reloaded'));
    assert.ok(line, berth.logs());
    assert.deepEqual(JSON.parse(line).changed, ['image.pinned_images']);
    // Still serving after the reload.
    assert.equal((await berth.cri.runtime.version({ version: '' })).runtimeName, 'berth');
    assert.equal(await berth.stop(), 0);
  } finally {
    await berth.cleanup();
  }
});
