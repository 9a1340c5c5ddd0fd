import { after, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer, type AddressInfo } from 'node:net';
import { Readable } from 'node:stream';
import { http1Request } from '../registry/http1.js';
import { compress, file, sha256, tarEntries } from '../../../test/helpers/image-builder.js';
import {
  LAYER_WORKER_IDLE_MS,
  layerWorkerCount,
  layerWorkerThreadIds,
  prepareLayerWorker,
  runIngest,
  setLayerWorkerCount,
  stopLayerWorkers,
} from './ingest.js';

const work = await mkdtemp(join(tmpdir(), 'berth-ingest-'));
after(async () => {
  setLayerWorkerCount(0);
  await stopLayerWorkers();
  await rm(work, { recursive: true, force: true });
});

/** The blob in uneven pieces, with pauses, as a network would deliver it. */
function trickle(data: Buffer, seed: number): Readable {
  let offset = 0;
  let n = seed;
  return new Readable({
    read() {
      n = (n * 1103515245 + 12345) & 0x7fffffff;
      const size = 1 + (n % (96 * 1024));
      const piece = data.subarray(offset, offset + size);
      offset += piece.length;
      if (piece.length === 0) this.push(null);
      else if (n % 5 === 0) setImmediate(() => this.push(Buffer.from(piece)));
      else this.push(Buffer.from(piece));
    },
  });
}

it(
  'layers ingested at once, sharing recycled batches, come out byte for byte',
  { timeout: 60_000 },
  async () => {
    // Several MiB each: many 256 KiB batches per layer, handed back and refilled while the others run.
    const layers = await Promise.all(
      (['gzip', 'zstd', 'gzip', 'zstd'] as const).map(async (compression, i) => {
        const contents = [randomBytes(3 * 1024 * 1024 + i), Buffer.from('text '.repeat(400_000 + i))];
        const tar = await tarEntries(contents.map((c, f) => file(`f${f}`, c)));
        const blob = await compress(tar, compression);
        return { i, contents, tar, blob };
      }),
    );
    await Promise.all(
      layers.map(async ({ i, contents, tar, blob }) => {
        const dir = join(work, `layer-${i}`);
        await mkdir(join(dir, 'diff'), { recursive: true });
        await mkdir(join(dir, 'scratch'));
        const result = await runIngest(
          {
            blob: { temp: join(dir, 'blob'), digest: sha256(blob), size: blob.length },
            unpack: { target: join(dir, 'diff'), scratch: join(dir, 'scratch'), name: `layer ${i}` },
          },
          trickle(blob, i + 1),
        );
        assert.equal(result.bytes, blob.length);
        assert.equal(result.unpack?.diffId, sha256(tar));
        assert.deepEqual(await readFile(join(dir, 'blob')), blob);
        for (const [f, content] of contents.entries()) {
          const written = await readFile(join(dir, 'diff', `f${f}`));
          assert.equal(
            createHash('sha256').update(written).digest('hex'),
            createHash('sha256').update(content).digest('hex'),
            `layer ${i} file f${f}`,
          );
        }
      }),
    );
  },
);

it(
  'a body read by its socket straight into the batches comes out byte for byte, several at once',
  { timeout: 60_000 },
  async () => {
    const layers = await Promise.all(
      [0, 1, 2].map(async (i) => {
        const contents = [randomBytes(5 * 1024 * 1024 + i), Buffer.from('words '.repeat(500_000 + i))];
        const tar = await tarEntries(contents.map((c, f) => file(`f${f}`, c)));
        return { i, contents, tar, blob: await compress(tar, 'gzip') };
      }),
    );
    // Each layer on a connection of its own, in uneven writes (the socket's reads fall anywhere).
    const server = createServer((socket) => {
      socket.once('data', (head: Buffer) => {
        const i = Number(/GET \/(\d+) /.exec(head.toString())![1]);
        const blob = layers[i]!.blob;
        socket.write(`HTTP/1.1 200 OK\r\nContent-Length: ${blob.length}\r\n\r\n`);
        const source = trickle(blob, i + 3);
        source.pipe(socket);
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const { port } = server.address() as AddressInfo;
    try {
      await Promise.all(
        layers.map(async ({ i, contents, tar, blob }) => {
          const dir = join(work, `direct-${i}`);
          await mkdir(join(dir, 'diff'), { recursive: true });
          await mkdir(join(dir, 'scratch'));
          const res = await http1Request(new URL(`http://127.0.0.1:${port}/${i}`), 'GET', {});
          let received = 0;
          const result = await runIngest(
            {
              blob: { temp: join(dir, 'blob'), digest: sha256(blob), size: blob.length },
              unpack: { target: join(dir, 'diff'), scratch: join(dir, 'scratch'), name: `layer ${i}` },
            },
            res.body,
            { onBytes: (n) => (received += n) },
          );
          assert.equal(received, blob.length);
          assert.equal(result.bytes, blob.length);
          assert.equal(result.unpack?.diffId, sha256(tar));
          assert.deepEqual(await readFile(join(dir, 'blob')), blob);
          for (const [f, content] of contents.entries()) {
            assert.ok((await readFile(join(dir, 'diff', `f${f}`))).equals(content), `layer ${i} file f${f}`);
          }
        }),
      );
    } finally {
      server.close();
    }
  },
);

it('a direct body cut short fails the ingest naming the layer, and leaves no blob', async () => {
  const blob = await compress(await tarEntries([file('f', randomBytes(2 * 1024 * 1024))]), 'gzip');
  const server = createServer((socket) => {
    socket.once('data', () => {
      socket.end(
        Buffer.concat([
          Buffer.from(`HTTP/1.1 200 OK\r\nContent-Length: ${blob.length}\r\n\r\n`),
          blob.subarray(0, blob.length >> 1),
        ]),
      );
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  const dir = join(work, 'direct-short');
  await mkdir(join(dir, 'diff'), { recursive: true });
  await mkdir(join(dir, 'scratch'));
  try {
    const res = await http1Request(new URL(`http://127.0.0.1:${port}/`), 'GET', {});
    await assert.rejects(
      runIngest(
        {
          blob: { temp: join(dir, 'blob'), digest: sha256(blob), size: blob.length },
          unpack: { target: join(dir, 'diff'), scratch: join(dir, 'scratch'), name: 'layer short' },
        },
        res.body,
      ),
      /reading layer short: connection closed \d+ bytes short of its Content-Length/,
    );
    await assert.rejects(readFile(join(dir, 'blob')), { code: 'ENOENT' });
  } finally {
    server.close();
  }
});

it('no more worker threads than configured, however many layers come at once', async () => {
  for (const count of [1, 2]) {
    await stopLayerWorkers();
    setLayerWorkerCount(count);
    const blob = await compress(await tarEntries([file('f', randomBytes(512 * 1024))]), 'gzip');
    await Promise.all(
      [0, 1, 2].map(async (i) => {
        const dir = join(work, `count-${count}-${i}`);
        await mkdir(join(dir, 'diff'), { recursive: true });
        await mkdir(join(dir, 'scratch'));
        await runIngest(
          { unpack: { target: join(dir, 'diff'), scratch: join(dir, 'scratch'), name: `layer ${i}` } },
          trickle(blob, i + 7),
        );
      }),
    );
    assert.equal(layerWorkerCount(), count);
  }
});

it('an idle spell retires the extra workers but keeps one warm for the next pull', async (t) => {
  await stopLayerWorkers();
  setLayerWorkerCount(2);
  t.mock.timers.enable({ apis: ['setTimeout'] });
  const blob = await compress(await tarEntries([file('f', randomBytes(512 * 1024))]), 'gzip');
  const ingestAll = async (name: string, count: number) => {
    const dirs = await Promise.all(
      Array.from({ length: count }, async (_, i) => {
        const dir = join(work, `${name}-${i}`);
        await mkdir(join(dir, 'diff'), { recursive: true });
        await mkdir(join(dir, 'scratch'));
        return dir;
      }),
    );
    // Started together, so that each finds the others' workers busy.
    await Promise.all(
      dirs.map((dir, i) =>
        runIngest(
          { unpack: { target: join(dir, 'diff'), scratch: join(dir, 'scratch'), name: `${name} ${i}` } },
          trickle(blob, i + 11),
        ),
      ),
    );
  };

  await ingestAll('burst', 2);
  assert.equal(layerWorkerCount(), 2);
  const before = layerWorkerThreadIds();
  t.mock.timers.tick(LAYER_WORKER_IDLE_MS - 1);
  assert.equal(layerWorkerCount(), 2, 'nothing retired before the idle time');
  t.mock.timers.tick(1);
  assert.equal(layerWorkerCount(), 1, 'the extra worker retired');
  const [kept] = layerWorkerThreadIds();
  assert.ok(before.includes(kept!));

  t.mock.timers.tick(10 * LAYER_WORKER_IDLE_MS);
  assert.deepEqual(layerWorkerThreadIds(), [kept], 'the last worker stays however long the daemon is idle');
  await ingestAll('after', 1);
  assert.deepEqual(layerWorkerThreadIds(), [kept], 'the next pull runs on the warm thread');
});

it('a worker prepared ahead of a pull: used, it is the one kept warm; never used, it retires when idle', async (t) => {
  await stopLayerWorkers();
  setLayerWorkerCount(1);
  t.mock.timers.enable({ apis: ['setTimeout'] });
  prepareLayerWorker();
  const [unused] = layerWorkerThreadIds();
  assert.ok(unused !== undefined);
  prepareLayerWorker();
  assert.deepEqual(layerWorkerThreadIds(), [unused], 'one prepared worker at most');
  t.mock.timers.tick(LAYER_WORKER_IDLE_MS - 1);
  assert.equal(layerWorkerCount(), 1, 'nothing retired before the idle time');
  t.mock.timers.tick(1);
  assert.equal(layerWorkerCount(), 0, 'no layer came (all present): it retired');

  prepareLayerWorker();
  const [prepared] = layerWorkerThreadIds();
  const dir = join(work, 'prepared');
  await mkdir(join(dir, 'diff'), { recursive: true });
  await mkdir(join(dir, 'scratch'));
  const blob = await compress(await tarEntries([file('f', randomBytes(64 * 1024))]), 'gzip');
  await runIngest(
    { unpack: { target: join(dir, 'diff'), scratch: join(dir, 'scratch'), name: 'prepared' } },
    trickle(blob, 5),
  );
  assert.deepEqual(layerWorkerThreadIds(), [prepared], 'the layer ran on the prepared thread');
  t.mock.timers.tick(10 * LAYER_WORKER_IDLE_MS);
  assert.deepEqual(layerWorkerThreadIds(), [prepared], 'used, it stays warm');
});
