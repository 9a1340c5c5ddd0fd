import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Duplex, PassThrough, Writable } from 'node:stream';
import { SpdyConnection, readableSource, type SpdyStream } from './connection.js';
import { FLAG_FIN, encodeFrame, type Frame } from './frames.js';
import { HeaderCodec } from './headers.js';

/** A socket that takes every write and is never read from (the test feeds reads itself). */
function nullSocket(): Duplex {
  return new Duplex({ read() {}, write: (_chunk, _encoding, callback) => callback() });
}

/** Bytes that tell their offset, so a misplaced or overwritten piece shows. */
function pattern(streamId: number, size: number): Buffer {
  const bytes = Buffer.alloc(size);
  for (let i = 0; i + 4 <= size; i += 4) bytes.writeUInt32BE((streamId << 24) | i, i);
  return bytes;
}

describe('SpdyConnection.receiveBorrowed', () => {
  it(
    'keeps nothing that points into the reused read buffer, and lends it only while a relayed piece is queued',
    { timeout: 20_000 },
    async () => {
      const codec = new HeaderCodec();
      const plain = pattern(1, 300_000);
      const relayed = pattern(3, 300_000);
      const frames: Frame[] = [
        {
          type: 'syn_stream',
          streamId: 1,
          associatedId: 0,
          priority: 0,
          flags: 0,
          headerBlock: codec.compress([['streamtype', 'plain']]),
        },
        {
          type: 'syn_stream',
          streamId: 3,
          associatedId: 0,
          priority: 0,
          flags: 0,
          headerBlock: codec.compress([['streamtype', 'relay']]),
        },
      ];
      for (let offset = 0; offset < plain.length; offset += 50_000) {
        const last = offset + 50_000 >= plain.length;
        frames.push({
          type: 'data',
          streamId: 1,
          flags: last ? FLAG_FIN : 0,
          data: plain.subarray(offset, offset + 50_000),
        });
        frames.push({
          type: 'data',
          streamId: 3,
          flags: last ? FLAG_FIN : 0,
          data: relayed.subarray(offset, offset + 50_000),
        });
        frames.push({ type: 'ping', id: offset + 1 });
      }
      const encoded = frames.map(encodeFrame);
      const wire = Buffer.concat(encoded);
      // Reads end inside every frame's header and inside each header block, and at random places.
      const cuts = new Set<number>([wire.length]);
      let seed = 7;
      for (let start = 0, i = 0; i < encoded.length; start += encoded[i].length, i++) {
        cuts.add(start + 3);
        if (encoded[i].length > 20) cuts.add(start + 20);
        seed = (seed * 1103515245 + 12345) % 2 ** 31;
        cuts.add(start + (seed % encoded[i].length));
      }
      const ends = [...cuts].filter((c) => c > 0 && c <= wire.length).sort((a, b) => a - b);

      const conn = new SpdyConnection(nullSocket(), { role: 'server', borrowedReads: true });
      const plainReceived: Buffer[] = [];
      const sinkReceived: Buffer[] = [];
      let plainEnded!: () => void;
      const plainDone = new Promise<void>((resolve) => (plainEnded = resolve));
      let allFed!: () => void;
      const fed = new Promise<void>((resolve) => (allFed = resolve));
      // A slow sink: its writes stay queued for a while, so pieces are lent.
      const sink = new Writable({
        highWaterMark: 64 * 1024,
        write(chunk: Buffer, _encoding, callback) {
          sinkReceived.push(Buffer.from(chunk));
          setTimeout(callback, 1);
        },
      });
      const sinkDone = new Promise((resolve) => sink.once('finish', resolve));
      conn.on('stream', (stream: SpdyStream) => {
        if (stream.header('streamtype') === 'plain') {
          // Read only once everything is fed: its bytes wait in the stream's buffer meanwhile.
          void fed.then(() => {
            stream.on('data', (chunk: Buffer) => plainReceived.push(Buffer.from(chunk)));
            stream.once('end', plainEnded);
          });
        } else {
          const back = new PassThrough();
          stream.relay(readableSource(back), sink);
          back.end();
        }
      });

      const buffer = Buffer.alloc(70_000);
      let lentReads = 0;
      for (let offset = 0, k = 0; offset < wire.length; k++) {
        const n = ends[k] - offset;
        wire.copy(buffer, 0, offset, offset + n);
        offset += n;
        let returned!: () => void;
        const back = new Promise<void>((resolve) => (returned = resolve));
        if (!conn.receiveBorrowed(buffer.subarray(0, n), returned)) {
          lentReads++;
          await back;
        }
        buffer.fill(0xee); // what the next read would do to anything still pointing here
        if (k % 5 === 0) await new Promise((resolve) => setImmediate(resolve));
      }
      allFed();
      await Promise.all([plainDone, sinkDone]);
      assert.ok(Buffer.concat(plainReceived).equals(plain), 'a stream read as usual gets its bytes intact');
      assert.ok(Buffer.concat(sinkReceived).equals(relayed), 'a relayed stream gets its bytes intact');
      assert.ok(lentReads > 0, 'the slow sink held some reads back');
      conn.destroy();
      codec.close();
    },
  );
});
