import { it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { createServer, type AddressInfo, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createSecureContext, createServer as createTlsServer } from 'node:tls';
import { selfSignedCert } from '../../../test/helpers/certs.js';
import {
  ChunkedDecoder,
  Http1Error,
  closeIdleConnections,
  http1Request,
  idleConnectionCount,
  type DirectSink,
  type Http1Body,
} from './http1.js';

/** A server that answers one connection with `answer`; resolves the request head it read. */
async function serve(
  answer: (socket: Socket, request: string) => unknown,
): Promise<{ url: URL; request: Promise<string>; closed: Promise<void> }> {
  let resolveRequest!: (r: string) => void;
  let resolveClosed!: () => void;
  const request = new Promise<string>((r) => (resolveRequest = r));
  const closed = new Promise<void>((r) => (resolveClosed = r));
  const server = createServer((socket) => {
    server.close();
    socket.setNoDelay(true);
    let head = '';
    socket.on('close', () => resolveClosed());
    socket.on('error', () => undefined);
    socket.on('data', (d: Buffer) => {
      if (head.includes('\r\n\r\n')) return;
      head += d.toString('latin1');
      if (head.includes('\r\n\r\n')) {
        resolveRequest(head);
        void answer(socket, head);
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  return { url: new URL(`http://127.0.0.1:${port}/v2/x/blobs/sha256:abc`), request, closed };
}

/** Writes `pieces` one by one with a pause between, so the client sees them as separate reads. */
async function writeSlowly(socket: Socket, pieces: (string | Buffer)[], end = true): Promise<void> {
  for (const piece of pieces) {
    socket.write(piece);
    await new Promise((r) => setTimeout(r, 5));
  }
  if (end) socket.end();
}

/** Reads a body into spaces of `spaceSize` bytes, checking that each fill lands in the space given. */
function collect(
  body: Http1Body,
  spaceSize: number,
  onFill?: (total: number) => void,
): Promise<{ bytes: Buffer; fills: number }> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    let space = Buffer.alloc(spaceSize);
    let total = 0;
    let fills = 0;
    const sink: DirectSink = {
      space: () => space,
      filled: (n) => {
        assert.ok(n > 0 && n <= space.length, `filled ${n} of a ${space.length}-byte space`);
        parts.push(Buffer.from(space.subarray(0, n)));
        total += n;
        fills++;
        space = Buffer.alloc(spaceSize);
        onFill?.(total);
      },
      end: () => resolve({ bytes: Buffer.concat(parts), fills }),
      error: reject,
    };
    body.start(sink);
  });
}

it('Content-Length: the body arrives whole in the spaces given, with the head in the same packet', async () => {
  const body = randomBytes(300_000);
  const { url, request } = await serve((socket) =>
    writeSlowly(socket, [
      Buffer.concat([
        Buffer.from(`HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\nX-Two: a\r\nX-Two: b\r\n\r\n`),
        body.subarray(0, 1000),
      ]),
      body.subarray(1000, 150_000),
      body.subarray(150_000),
    ]),
  );
  const res = await http1Request(url, 'GET', { authorization: 'Bearer t0k', 'user-agent': 'berth' });
  assert.equal(res.statusCode, 200);
  assert.equal(res.body.length, body.length);
  assert.deepEqual(res.headers['x-two'], ['a', 'b']);
  const got = await collect(res.body, 64 * 1024);
  assert.ok(got.bytes.equals(body));
  const head = await request;
  assert.match(head, /^GET \/v2\/x\/blobs\/sha256:abc HTTP\/1\.1\r\n/);
  assert.match(head, /\r\nHost: 127\.0\.0\.1:\d+\r\n/);
  assert.match(head, /\r\nauthorization: Bearer t0k\r\n/);
  assert.doesNotMatch(head, /\r\nConnection:/i, 'HTTP/1.1 keeps the connection by default');
});

it('chunked: extensions and trailers are dropped, the data compacted in place', async () => {
  const data = randomBytes(100_000);
  const pieces: (string | Buffer)[] = ['HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n'];
  for (let at = 0; at < data.length;) {
    const size = Math.min(data.length - at, 1 + ((at * 7919) % 30_000));
    pieces.push(`${size.toString(16)};note=x\r\n`, data.subarray(at, at + size), '\r\n');
    at += size;
  }
  pieces.push('0\r\nX-Trailer: y\r\n\r\n');
  // One write would be one read: the framing then sits inside the sink's spaces.
  const { url } = await serve((socket) =>
    writeSlowly(socket, [Buffer.concat(pieces.map((p) => Buffer.from(p)))]),
  );
  const res = await http1Request(url, 'GET', {});
  assert.equal(res.body.length, undefined);
  const got = await collect(res.body, 256 * 1024);
  assert.ok(got.bytes.equals(data));
});

it('the chunked decoder gives the same bytes however the input is cut', () => {
  const data = Buffer.from('hello, chunked world; 0123456789abcdef');
  const wire = Buffer.from(
    `5\r\nhello\r\na;ext="q"\r\n, chunked \r\n17\r\n${data.subarray(15).toString()}\r\n0\r\nT: 1\r\n\r\n`,
  );
  for (let cut = 0; cut <= wire.length; cut++) {
    for (let cut2 = cut; cut2 <= wire.length; cut2 += 7) {
      const decoder = new ChunkedDecoder();
      const out: Buffer[] = [];
      for (const [from, to] of [
        [0, cut],
        [cut, cut2],
        [cut2, wire.length],
      ] as const) {
        const piece = Buffer.from(wire.subarray(from, to));
        const n = decoder.decode(piece, piece.length);
        out.push(piece.subarray(0, n));
      }
      assert.equal(Buffer.concat(out).toString(), data.toString(), `cut at ${cut}/${cut2}`);
      assert.ok(decoder.done);
    }
  }
});

it('the chunked decoder refuses malformed framing', () => {
  for (const wire of ['zz\r\n', '5\r\nhelloX\r\n', '\r\n', '5\nhello', '1000000000000000\r\n']) {
    const piece = Buffer.from(wire);
    assert.throws(() => new ChunkedDecoder().decode(piece, piece.length), Http1Error, wire);
  }
});

it('a connection closed short of its Content-Length is an error naming the shortfall', async () => {
  const { url } = await serve((socket) =>
    writeSlowly(socket, ['HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n', Buffer.alloc(1200)]),
  );
  const res = await http1Request(url, 'GET', {});
  await assert.rejects(collect(res.body, 4096), /connection closed 3800 bytes short of its Content-Length/);
});

it('an interim 1xx answer is skipped; a body without framing ends with the connection', async () => {
  const { url } = await serve((socket) =>
    writeSlowly(socket, ['HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n', '\r\nuntil ', 'the end']),
  );
  const res = await http1Request(url, 'GET', {});
  assert.equal(res.statusCode, 200);
  assert.equal((await collect(res.body, 3)).bytes.toString(), 'until the end');
});

it('a body that arrived whole before it was started is delivered, then ended', async () => {
  const { url, closed } = await serve((socket) => {
    socket.end('HTTP/1.1 404 Not Found\r\nContent-Length: 28\r\n\r\n{"errors":[{"code":"NOPE"}]}');
  });
  const res = await http1Request(url, 'GET', {});
  await closed;
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(res.statusCode, 404);
  assert.equal(await res.body.text(), '{"errors":[{"code":"NOPE"}]}');
});

it('pause holds reading back until resume', async () => {
  const body = randomBytes(4 * 1024 * 1024);
  const { url } = await serve((socket) => {
    socket.end(
      Buffer.concat([Buffer.from(`HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\n\r\n`), body]),
    );
  });
  const res = await http1Request(url, 'GET', {});
  let paused = false;
  let atPause = 0;
  let lateFills = 0;
  const done = collect(res.body, 64 * 1024, (total) => {
    if (paused) lateFills++;
    if (!paused && total > 256 * 1024 && atPause === 0) {
      paused = true;
      atPause = total;
      res.body.pause();
      setTimeout(() => {
        paused = false;
        res.body.resume();
      }, 100);
    }
  });
  const got = await done;
  assert.ok(got.bytes.equals(body));
  assert.equal(lateFills, 0, 'nothing read while paused');
});

it('an abort mid-body fails the sink with the reason and closes the connection', async () => {
  const { url, closed } = await serve((socket) =>
    writeSlowly(socket, ['HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n', Buffer.alloc(1000)], false),
  );
  const controller = new AbortController();
  const res = await http1Request(url, 'GET', {}, { signal: controller.signal });
  const reading = collect(res.body, 4096, () => controller.abort(new Error('pull cancelled')));
  await assert.rejects(reading, /pull cancelled/);
  await closed;
});

it('bad answers and bad requests are errors, not hangs', async () => {
  const big = await serve((socket) => socket.end(`HTTP/1.1 200 OK\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`));
  await assert.rejects(http1Request(big.url, 'GET', {}), /response head larger than 16384 bytes/);
  const garbage = await serve((socket) => socket.end('SSH-2.0-OpenSSH\r\n\r\n'));
  await assert.rejects(http1Request(garbage.url, 'GET', {}), /not an HTTP\/1\.1 status line/);
  const silent = await serve((socket) => socket.end());
  await assert.rejects(http1Request(silent.url, 'GET', {}), /connection closed before a response/);
  const twoLengths = await serve((socket) =>
    socket.end('HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello'),
  );
  await assert.rejects(http1Request(twoLengths.url, 'GET', {}), /invalid Content-Length/);
  await assert.rejects(
    http1Request(new URL('http://127.0.0.1:9/'), 'GET', { authorization: 'Bearer x\r\nX-Evil: 1' }),
    /invalid request header "authorization"/,
  );
});

/**
 * A keep-alive server: `answer(request index, connection index)` gives the
 * bytes for each request (undefined: close that connection without a word).
 */
async function keepAliveServer(
  answer: (request: number, connection: number) => string | Buffer | undefined,
  tls?: { key: Buffer; cert: Buffer },
): Promise<{ url: URL; connections: () => number; requests: () => number; close(): void }> {
  let connections = 0;
  let requests = 0;
  const sockets = new Set<Socket>();
  const onConnection = (socket: Socket) => {
    const connection = connections++;
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    let buffered = '';
    socket.on('data', (d: Buffer) => {
      buffered += d.toString('latin1');
      let end: number;
      while ((end = buffered.indexOf('\r\n\r\n')) !== -1) {
        buffered = buffered.slice(end + 4);
        const reply = answer(requests++, connection);
        if (reply === undefined) socket.destroy();
        else socket.write(reply);
      }
    });
  };
  const server = tls ? createTlsServer(tls, onConnection) : createServer(onConnection);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  return {
    url: new URL(`${tls ? 'https' : 'http'}://127.0.0.1:${port}/blob`),
    connections: () => connections,
    requests: () => requests,
    close() {
      server.close();
      for (const s of sockets) s.destroy();
    },
  };
}

const ok = (body: string, extra = '') =>
  `HTTP/1.1 200 OK\r\nContent-Length: ${Buffer.byteLength(body)}\r\n${extra}\r\n${body}`;

async function readText(url: URL): Promise<string> {
  const res = await http1Request(url, 'GET', {});
  return (await collect(res.body, 1024)).bytes.toString();
}

it('keep-alive: answers read whole leave the connection for the next request', async () => {
  closeIdleConnections();
  const chunked = 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\ntwo\r\n0\r\n\r\n';
  const server = await keepAliveServer((request) => (request === 1 ? chunked : ok(`answer ${request}`)));
  try {
    assert.equal(await readText(server.url), 'answer 0');
    assert.equal(idleConnectionCount(), 1);
    assert.equal(await readText(server.url), 'two');
    assert.equal(await readText(server.url), 'answer 2');
    assert.equal(server.connections(), 1, 'three requests on one connection');
  } finally {
    closeIdleConnections();
    server.close();
  }
});

it('keep-alive: not after Connection: close, an HTTP/1.0 answer, surplus bytes or a body left unread', async () => {
  closeIdleConnections();
  const answers = [
    ok('a', 'Connection: close\r\n'),
    'HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nb',
    `${ok('c')}GARBAGE`,
    ok('x'.repeat(100_000)),
  ];
  const server = await keepAliveServer((request) => answers[request]);
  try {
    for (const expected of ['a', 'b', 'c']) {
      assert.equal(await readText(server.url), expected);
      assert.equal(idleConnectionCount(), 0, `not kept after ${JSON.stringify(expected)}`);
    }
    const res = await http1Request(server.url, 'GET', {});
    res.body.destroy();
    assert.equal(idleConnectionCount(), 0, 'not kept with its body unread');
    assert.equal(server.connections(), 4);
  } finally {
    closeIdleConnections();
    server.close();
  }
});

it('keep-alive: a kept connection the server closed is left, and one closed as it is reused is retried', async () => {
  closeIdleConnections();
  // Connection 0 answers once, then drops the next request unanswered.
  const server = await keepAliveServer((request, connection) =>
    connection === 0 && request > 0 ? undefined : ok(`r${request} c${connection}`),
  );
  try {
    assert.equal(await readText(server.url), 'r0 c0');
    assert.equal(await readText(server.url), 'r2 c1', 'sent again on a new connection');
    assert.equal(server.requests(), 3);
    // The server closes the idle connection: it leaves the pool.
    assert.equal(idleConnectionCount(), 1);
    server.close();
    for (let i = 0; i < 50 && idleConnectionCount() > 0; i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(idleConnectionCount(), 0);
  } finally {
    closeIdleConnections();
    server.close();
  }
});

it('over TLS: bodies read into the spaces given, paused and resumed, three requests on one kept connection', async () => {
  closeIdleConnections();
  const dir = await mkdtemp(join(tmpdir(), 'berth-http1-tls-'));
  try {
    const made = await selfSignedCert(dir, { commonName: '127.0.0.1', ipAddress: '127.0.0.1' });
    const cert = await readFile(made.cert);
    const bodies = [randomBytes(1024 * 1024), randomBytes(300_000), randomBytes(5)];
    const server = await keepAliveServer(
      (request) =>
        Buffer.concat([
          Buffer.from(`HTTP/1.1 200 OK\r\nContent-Length: ${bodies[request]!.length}\r\n\r\n`),
          bodies[request]!,
        ]),
      { key: await readFile(made.key), cert },
    );
    const url = server.url;
    const options = { secureContext: createSecureContext({ ca: cert }), rejectUnauthorized: true };
    try {
      for (const [i, body] of bodies.entries()) {
        const res = await http1Request(url, 'GET', {}, options);
        let paused = false;
        const got = await collect(res.body, 64 * 1024, (total) => {
          if (i === 0 && !paused && total > 100_000) {
            paused = true;
            res.body.pause();
            setTimeout(() => res.body.resume(), 50);
          }
        });
        assert.ok(got.bytes.equals(body), `body ${i}`);
      }
      assert.equal(server.connections(), 1, 'one TLS connection for the three');
    } finally {
      closeIdleConnections();
      server.close();
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
