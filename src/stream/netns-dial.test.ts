import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createServer, type AddressInfo, type Server } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { mkdtemp, rm, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { newNetnsAt, unmount } from '../util/mount.js';
import { dialInNetns, stopNetnsDialers } from './netns-dial.js';

// The dialer helper runs through nsenter, which needs root; berth's own
// namespace (/proc/self/ns/net) stands in for a pod's so the test needs no pod.
const HERE = `/proc/${process.pid}/ns/net`;

function dialerPids(): number[] {
  const out = execFileSync('ps', ['-eo', 'pid=,ppid=,args='], { encoding: 'utf8' });
  return out
    .split('\n')
    .map((line) => line.trim().split(/\s+/))
    .filter((f) => Number(f[1]) === process.pid && f.some((a) => a.endsWith('netns-dialer.js')))
    .map((f) => Number(f[0]));
}

describe('dialInNetns', { skip: process.getuid?.() !== 0 && 'needs root for nsenter' }, () => {
  let server: Server;
  let port: number;

  before(async () => {
    server = createServer((socket) => socket.pipe(socket));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as AddressInfo).port;
  });
  after(() => {
    stopNetnsDialers();
    server.close();
  });

  it('hands back a socket connected inside the namespace that berth reads and writes itself', async () => {
    const conn = await dialInNetns(HERE, port);
    const echoed: Buffer[] = [];
    conn.output.on('data', (chunk: Buffer) => echoed.push(chunk));
    conn.input.end('hello through the netns');
    await new Promise((resolve) => conn.output.once('end', resolve));
    assert.equal(Buffer.concat(echoed).toString(), 'hello through the netns');
    assert.equal(await conn.done, null);
  });

  it('serves concurrent dials through one helper per namespace', async () => {
    const conns = await Promise.all(Array.from({ length: 10 }, () => dialInNetns(HERE, port)));
    assert.equal(dialerPids().length, 1);
    for (const conn of conns) conn.kill();
  });

  it('loses nothing a port sends first, however many dials are in flight', async () => {
    // A greeting and a close straight after accept (as MySQL or SSH servers
    // greet): the dialer's own copy of the socket must never read them.
    const greeter = createServer((socket) => socket.end('greeting\n'));
    await new Promise<void>((resolve) => greeter.listen(0, '127.0.0.1', resolve));
    const greeterPort = (greeter.address() as AddressInfo).port;
    try {
      for (let round = 0; round < 3; round++) {
        const conns = await Promise.all(Array.from({ length: 20 }, () => dialInNetns(HERE, greeterPort)));
        const received = await Promise.all(
          conns.map(
            (conn) =>
              new Promise<string>((resolve) => {
                let text = '';
                const timer = setTimeout(() => resolve(`${text} (no end after 5 s)`), 5000);
                conn.output.on('data', (chunk: Buffer) => (text += chunk.toString()));
                conn.output.once('end', () => {
                  clearTimeout(timer);
                  resolve(text);
                });
              }),
          ),
        );
        for (const conn of conns) conn.kill();
        assert.deepEqual(received, Array<string>(20).fill('greeting\n'), `round ${round}`);
      }
    } finally {
      greeter.close();
    }
  });

  it('consume: reads land in one reused buffer, a lent chunk holds reading back, the end still comes', async () => {
    const payload = Buffer.alloc(4 * 1024 * 1024);
    for (let i = 0; i < payload.length; i += 4) payload.writeUInt32BE(i, i);
    const talker = createServer((socket) => {
      socket.write('early;');
      setTimeout(() => socket.end(payload), 100);
    });
    await new Promise<void>((resolve) => talker.listen(0, '127.0.0.1', resolve));
    try {
      const conn = await dialInNetns(HERE, (talker.address() as AddressInfo).port);
      await new Promise((r) => setTimeout(r, 50)); // 'early;' waits in output meanwhile
      const received: Buffer[] = [];
      const buffers = new Set<ArrayBufferLike>();
      let calls = 0;
      let overwritten = 0;
      conn.consume((bytes) => {
        received.push(Buffer.from(bytes));
        buffers.add(bytes.buffer);
        if (++calls % 3 !== 0) return true;
        // Lend this one: nothing may be read into it until resume().
        const copy = Buffer.from(bytes);
        setTimeout(() => {
          if (!copy.equals(bytes)) overwritten++;
          conn.resume();
        }, 5);
        return false;
      });
      await new Promise((resolve) => conn.output.once('end', resolve));
      assert.equal(Buffer.concat(received).toString('latin1', 0, 6), 'early;');
      assert.ok(Buffer.concat(received).subarray(6).equals(payload), 'the bytes, in order');
      assert.equal(overwritten, 0);
      // The early chunk is a copy; every later read came in the same buffer.
      assert.ok(calls > 4);
      assert.equal(buffers.size, 2);
      conn.kill();
    } finally {
      talker.close();
    }
  });

  it('rejects a refused port in strerror words', async () => {
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const closedPort = (closed.address() as AddressInfo).port;
    await new Promise((resolve) => closed.close(resolve));
    await assert.rejects(dialInNetns(HERE, closedPort), {
      message: `connect to 127.0.0.1:${closedPort}: Connection refused`,
    });
  });

  it('rejects with nsenter’s reason when the namespace is gone', async () => {
    await assert.rejects(dialInNetns('/run/netns/berth-test-no-such-netns', port), (err: Error) => {
      assert.match(err.message, /cannot connect in \/run\/netns\/berth-test-no-such-netns: .*No such file/);
      return true;
    });
  });

  it('stopNetnsDialers leaves no helper running', async () => {
    const conn = await dialInNetns(HERE, port);
    conn.kill();
    assert.equal(dialerPids().length, 1);
    stopNetnsDialers();
    const deadline = Date.now() + 5000;
    while (dialerPids().length > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    assert.deepEqual(dialerPids(), []);
  });

  it('lets go of a namespace within seconds of its removal', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'berth-dial-'));
    const file = join(dir, 'netns');
    try {
      await writeFile(file, '');
      await newNetnsAt(file);
      // Nothing listens in the new namespace (lo is even down), but its helper now runs.
      await assert.rejects(dialInNetns(file, port), /connect to 127\.0\.0\.1/);
      assert.equal(dialerPids().length, 1);
      await unmount(file, true);
      await unlink(file);
      const deadline = Date.now() + 10_000;
      while (dialerPids().length > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
      assert.deepEqual(dialerPids(), []);
    } finally {
      await unmount(file, true).catch(() => undefined);
      await rm(dir, { recursive: true, force: true });
    }
  });
});
