import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect, createServer, type AddressInfo, type Socket } from 'node:net';
import { TLSSocket } from 'node:tls';
import { takeOverReads } from './own-reads.js';

describe('takeOverReads', () => {
  it('moves a connection into a socket reading into one buffer, keeping what was read and the connection', async () => {
    const accepted: Socket[] = [];
    const server = createServer({ allowHalfOpen: true }, (socket) => accepted.push(socket));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const client = connect((server.address() as AddressInfo).port, '127.0.0.1');
    await once(client, 'connect');
    while (accepted.length === 0) await new Promise((resolve) => setImmediate(resolve));
    const old = accepted[0];
    client.write('read before; ');
    await once(old, 'readable'); // now held in the old socket's buffer
    const buffer = Buffer.alloc(64);
    const reads: Buffer[] = [];
    const buffers = new Set<ArrayBufferLike>();
    const taken = takeOverReads(old, buffer, (bytes) => {
      reads.push(Buffer.from(bytes));
      buffers.add(bytes.buffer);
      return true;
    });
    assert.ok(taken);
    assert.equal(taken.early.toString(), 'read before; ');
    await once(old, 'close'); // the old object is gone...
    assert.equal(await new Promise((resolve) => server.getConnections((_e, n) => resolve(n))), 0);
    // ...the connection is not.
    client.write('x'.repeat(1000));
    taken.socket.write('hello back');
    const back = await once(client, 'data');
    assert.equal((back[0] as Buffer).toString(), 'hello back');
    client.end();
    await once(taken.socket, 'end');
    assert.equal(Buffer.concat(reads).toString(), 'x'.repeat(1000));
    assert.deepEqual([...buffers], [buffer.buffer], 'every read in the one buffer');
    taken.socket.destroy();
    client.destroy();
    server.close();
  });

  it('leaves a TLS socket alone (its bytes are decrypted above the handle)', () => {
    const tls = new TLSSocket(null as unknown as Socket);
    assert.equal(
      takeOverReads(tls, Buffer.alloc(16), () => true),
      undefined,
    );
    tls.destroy();
  });
});
