import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, readFile, writeFile } from 'node:fs/promises';
import { spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { createHash } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run, runChecked } from '../../src/util/run.js';
import {
  buildImage,
  buildIndex,
  writeOciLayout,
  writeDockerArchive,
  pushToRegistry,
  file,
  whiteout,
  opaque,
  hardlink,
  dir,
} from './image-builder.js';

const dirs: string[] = [];
after(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});
async function tempDir(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), 'berth-builder-'));
  dirs.push(d);
  return d;
}

test('builder: an OCI layout that skopeo reads and copies, and umoci unpacks into a runnable busybox', async () => {
  const work = await tempDir();
  const layout = join(work, 'layout');
  const image = await buildImage({
    config: { entrypoint: ['/bin/sh', '-c'], cmd: ['echo hello'], labels: { a: 'b' }, workingDir: '/root' },
    layers: [
      {
        entries: [dir('data'), file('data/one', '1'), hardlink('data/one-link', 'data/one')],
        compression: 'gzip',
      },
      { entries: [whiteout('data/one-link'), opaque('home')], compression: 'none' },
    ],
  });
  await writeOciLayout(layout, [{ tag: 'v1', image }]);
  const raw = await runChecked('/usr/bin/skopeo', ['inspect', '--raw', `oci:${layout}:v1`]);
  assert.equal(JSON.parse(raw.stdout).config.digest, image.configDigest);
  // skopeo verifies every blob's digest while copying.
  await runChecked('/usr/bin/skopeo', [
    'copy',
    '--quiet',
    `oci:${layout}:v1`,
    `oci:${join(work, 'copy')}:v1`,
  ]);
  const unpacked = join(work, 'bundle');
  await runChecked('/usr/bin/umoci', ['raw', 'unpack', '--image', `${layout}:v1`, unpacked]);
  const res = await run('/usr/sbin/chroot', [unpacked, '/bin/sh', '-c', 'echo ok; cat /data/one']);
  assert.equal(res.code, 0, res.stderr);
  assert.equal(res.stdout, 'ok\n1');
  assert.match(await readFile(join(unpacked, 'etc/passwd'), 'utf8'), /^root:x:0:0:/);
});

test('builder: zstd layers copy cleanly through skopeo (digests verified)', async () => {
  const work = await tempDir();
  const image = await buildImage({
    baseCompression: 'zstd',
    layers: [{ entries: [file('z', 'z')], compression: 'zstd' }],
  });
  await writeOciLayout(join(work, 'z'), [{ tag: 'z', image }]);
  await runChecked('/usr/bin/skopeo', [
    'copy',
    '--quiet',
    `oci:${join(work, 'z')}:z`,
    `oci:${join(work, 'copy')}:z`,
  ]);
});

test('builder: the same spec gives the same digests', async () => {
  const a = await buildImage({ config: { cmd: ['true'] } });
  const b = await buildImage({ config: { cmd: ['true'] } });
  assert.equal(a.manifestDigest, b.manifestDigest);
});

test('builder: multi-arch index and docker-save archive', async () => {
  const work = await tempDir();
  const image = await buildImage();
  const index = await buildIndex([image]);
  assert.equal(index.images.length, 3);
  await writeOciLayout(join(work, 'multi'), [{ tag: 'latest', image: index }]);
  const raw = await runChecked('/usr/bin/skopeo', ['inspect', '--raw', `oci:${join(work, 'multi')}:latest`]);
  assert.deepEqual(
    (JSON.parse(raw.stdout) as { manifests: { platform: { architecture: string } }[] }).manifests.map(
      (m) => m.platform.architecture,
    ),
    ['amd64', 'arm64', 'arm'],
  );
  const archive = join(work, 'save.tar');
  await writeDockerArchive(archive, [{ image, repoTags: ['busybox:test'] }]);
  const inspect = await runChecked('/usr/bin/skopeo', ['inspect', '--raw', `docker-archive:${archive}`]);
  assert.equal(JSON.parse(inspect.stdout).config.digest, image.configDigest);
});

test('builder: Docker schema2 manifests and manifest lists that skopeo accepts', async () => {
  const work = await tempDir();
  const image = await buildImage({
    mediaTypes: 'docker',
    layers: [{ entries: [file('d', 'd')], compression: 'none' }],
  });
  const list = await buildIndex([image], { mediaTypes: 'docker' });
  await writeOciLayout(join(work, 'd'), [
    { tag: 'single', image },
    { tag: 'list', image: list },
  ]);
  const single = JSON.parse(
    (await runChecked('/usr/bin/skopeo', ['inspect', '--raw', `oci:${join(work, 'd')}:single`])).stdout,
  );
  assert.equal(single.mediaType, 'application/vnd.docker.distribution.manifest.v2+json');
  const raw = JSON.parse(
    (await runChecked('/usr/bin/skopeo', ['inspect', '--raw', `oci:${join(work, 'd')}:list`])).stdout,
  );
  assert.equal(raw.mediaType, 'application/vnd.docker.distribution.manifest.list.v2+json');
  await runChecked('/usr/bin/skopeo', [
    'copy',
    '--quiet',
    '--all',
    `oci:${join(work, 'd')}:list`,
    `oci:${join(work, 'copy')}:list`,
  ]);
});

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

test('builder: pushToRegistry keeps a Docker manifest list byte for byte', async () => {
  const work = await tempDir();
  const port = await freePort();
  await writeFile(
    join(work, 'config.yml'),
    `version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: ${join(work, 'data')}\nhttp:\n  addr: 127.0.0.1:${port}\n`,
  );
  const registry = spawn('/usr/bin/docker-registry', ['serve', join(work, 'config.yml')], {
    stdio: 'ignore',
  });
  try {
    const base = `http://127.0.0.1:${port}`;
    const deadline = Date.now() + 20_000;
    for (;;) {
      const ok = await fetch(`${base}/v2/`).then(
        (r) => r.ok,
        () => false,
      );
      if (ok) break;
      if (Date.now() > deadline) throw new Error('docker-registry did not start');
      await new Promise((r) => setTimeout(r, 50));
    }
    const image = await buildImage({
      mediaTypes: 'docker',
      layers: [{ entries: [file('x', 'x')], compression: 'gzip' }],
    });
    const list = await buildIndex([image], { mediaTypes: 'docker' });
    const digest = await pushToRegistry(base, 'test/list', 'v1', list);
    const res = await fetch(`${base}/v2/test/list/manifests/v1`, {
      headers: { accept: 'application/vnd.docker.distribution.manifest.list.v2+json' },
    });
    const body = Buffer.from(await res.arrayBuffer());
    assert.equal(
      res.headers.get('content-type'),
      'application/vnd.docker.distribution.manifest.list.v2+json',
    );
    assert.equal(`sha256:${createHash('sha256').update(body).digest('hex')}`, digest);
  } finally {
    registry.kill('SIGKILL');
    await new Promise((resolve) =>
      registry.exitCode !== null ? resolve(null) : registry.once('exit', resolve),
    );
  }
});
