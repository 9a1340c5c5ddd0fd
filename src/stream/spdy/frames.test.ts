import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { FrameParser, SpdyProtocolError, encodeFrame, type Frame } from './frames.js';

const hex = (s: string) => Buffer.from(s.replace(/\s+/g, ''), 'hex');

/** Frames as their bytes on the wire (SPDY/3 draft, section 2.6). */
const VECTORS: [string, Frame, string][] = [
  [
    'DATA with FIN',
    { type: 'data', streamId: 1, flags: 1, data: Buffer.from('hi') },
    '00000001 01 000002 6869',
  ],
  [
    'empty DATA',
    { type: 'data', streamId: 0x7fffffff, flags: 0, data: Buffer.alloc(0) },
    '7fffffff 00 000000',
  ],
  ['RST_STREAM', { type: 'rst_stream', streamId: 3, status: 5 }, '80030003 00 000008 00000003 00000005'],
  ['PING', { type: 'ping', id: 1 }, '80030006 00 000004 00000001'],
  ['GOAWAY', { type: 'goaway', lastGoodStreamId: 7, status: 0 }, '80030007 00 000008 00000007 00000000'],
  [
    'WINDOW_UPDATE',
    { type: 'window_update', streamId: 1, delta: 4096 },
    '80030009 00 000008 00000001 00001000',
  ],
  [
    'SETTINGS',
    { type: 'settings', flags: 0, payload: hex('00000001 00000007 00000064') },
    '80030004 00 00000c 00000001 00000007 00000064',
  ],
  [
    'SYN_REPLY',
    { type: 'syn_reply', streamId: 5, flags: 0, headerBlock: hex('aabb') },
    '80030002 00 000006 00000005 aabb',
  ],
  [
    'HEADERS with FIN',
    { type: 'headers', streamId: 5, flags: 1, headerBlock: hex('cc') },
    '80030008 01 000005 00000005 cc',
  ],
  [
    'SYN_STREAM',
    { type: 'syn_stream', streamId: 1, associatedId: 0, priority: 0, flags: 0, headerBlock: hex('ddee') },
    '80030001 00 00000c 00000001 00000000 0000 ddee',
  ],
];

describe('SPDY frames', () => {
  for (const [name, frame, bytes] of VECTORS) {
    it(`encodes and decodes ${name}`, () => {
      assert.deepEqual(encodeFrame(frame), hex(bytes));
      assert.deepEqual(new FrameParser().push(hex(bytes)), [frame]);
    });
  }

  it('decodes the SYN_STREAM kubectl sends (captured bytes)', () => {
    const [frame] = new FrameParser().push(
      hex(
        '80030001000000290000000100000000000078f9e3c6a7c26260606004a7b392a2d4c45c6851c29a0a0a6800000000ffff',
      ),
    );
    assert.equal(frame.type, 'syn_stream');
    assert.equal(frame.type === 'syn_stream' && frame.streamId, 1);
    assert.equal(frame.type === 'syn_stream' && frame.headerBlock.length, 0x29 - 10);
  });

  it('reassembles frames split at every byte', () => {
    const all = Buffer.concat(VECTORS.map(([, , b]) => hex(b)));
    const parser = new FrameParser();
    const frames: Frame[] = [];
    for (let i = 0; i < all.length; i++) frames.push(...parser.push(all.subarray(i, i + 1)));
    assert.deepEqual(
      frames,
      VECTORS.map(([, f]) => f),
    );
    assert.equal(parser.pending, 0);
  });

  it('splits coalesced frames and keeps a trailing partial one', () => {
    const all = Buffer.concat(VECTORS.map(([, , b]) => hex(b)));
    const parser = new FrameParser();
    const frames = parser.push(Buffer.concat([all, hex('800300060000')]));
    assert.equal(frames.length, VECTORS.length);
    assert.equal(parser.pending, 6);
    assert.deepEqual(parser.push(hex('0004 0000002a')), [{ type: 'ping', id: 42 }]);
  });

  it('refuses another version and oversized frames', () => {
    assert.throws(() => new FrameParser().push(hex('80020006 00 000004 00000001')), SpdyProtocolError);
    assert.throws(() => new FrameParser(1024).push(hex('00000001 00 100000')), /exceeds the limit/);
    assert.throws(() => new FrameParser().push(hex('80030003 00 000004 00000001')), /too short/);
  });

  it('refuses payloads the length field cannot carry', () => {
    assert.throws(
      () => encodeFrame({ type: 'data', streamId: 1, flags: 0, data: Buffer.alloc(0x1000000) }),
      RangeError,
    );
  });
});

describe('SPDY frames with streamed DATA payloads', () => {
  it('hands out payload pieces as they arrive, FIN on the last piece only', () => {
    const parser = new FrameParser(undefined, true);
    const bytes = Buffer.concat([
      Buffer.from('00000003 01 000006'.replace(/\s+/g, ''), 'hex'),
      Buffer.from('abcdef'),
      Buffer.from('80030006 00 000004 00000009'.replace(/\s+/g, ''), 'hex'),
      Buffer.from('00000005 01 000000'.replace(/\s+/g, ''), 'hex'),
    ]);
    const frames: Frame[] = [];
    let offset = 0;
    for (const cut of [3, 10, 12, 20, 25, bytes.length]) {
      frames.push(...parser.push(bytes.subarray(offset, cut)));
      offset = cut;
    }
    const data = frames.filter((f) => f.type === 'data' && f.streamId === 3);
    assert.equal(
      Buffer.concat(data.map((f) => (f.type === 'data' ? f.data : Buffer.alloc(0)))).toString(),
      'abcdef',
    );
    assert.ok(data.length > 1, 'the payload came in pieces');
    assert.deepEqual(
      data.map((f) => f.type === 'data' && f.flags),
      [...Array(data.length - 1).fill(0), 1],
    );
    assert.deepEqual(frames.at(-2), { type: 'ping', id: 9 });
    assert.deepEqual(frames.at(-1), { type: 'data', streamId: 5, flags: 1, data: Buffer.alloc(0) });
    assert.equal(parser.pending, 0);
  });
});
