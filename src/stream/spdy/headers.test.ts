import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { inflateSync } from 'node:zlib';
import { HeaderCodec, adler32, decodeHeaderBlock, encodeHeaderBlock } from './headers.js';
import { SPDY3_DICTIONARY } from './dictionary.js';

const hex = (s: string) => Buffer.from(s.replace(/\s+/g, ''), 'hex');

describe('SPDY header blocks', () => {
  it('uses the SPDY/3 dictionary (1423 bytes, Adler-32 e3c6a7c2)', () => {
    assert.equal(SPDY3_DICTIONARY.length, 1423);
    assert.equal(adler32(SPDY3_DICTIONARY), 0xe3c6a7c2);
  });

  it('encodes name/value pairs with 32-bit lengths, lower-case names and NUL-joined values', () => {
    const block = encodeHeaderBlock([
      ['StreamType', 'error'],
      ['x-multi', ['a', 'b']],
    ]);
    assert.deepEqual(
      block,
      hex(
        '00000002 0000000a 73747265616d74797065 00000005 6572726f72 00000007 782d6d756c7469 00000003 610062',
      ),
    );
    assert.deepEqual(
      decodeHeaderBlock(block),
      new Map([
        ['streamtype', ['error']],
        ['x-multi', ['a', 'b']],
      ]),
    );
  });

  it('refuses truncated blocks and trailing bytes', () => {
    assert.throws(() => decodeHeaderBlock(hex('00000001 00000005 6162')), /truncated/);
    assert.throws(() => decodeHeaderBlock(hex('00000000 00')), /trailing/);
  });

  it('decompresses the blocks kubectl sends, across frames of one zlib stream (captured bytes)', async () => {
    const codec = new HeaderCodec();
    assert.deepEqual(
      await codec.decompress(hex('78f9e3c6a7c26260606004a7b392a2d4c45c6851c29a0a0a6800000000ffff')),
      new Map([['streamtype', ['error']]]),
    );
    assert.deepEqual(
      await codec.decompress(hex('c22ac5565c92925f5a02000000ffff')),
      new Map([['streamtype', ['stdout']]]),
    );
    codec.close();
  });

  it('writes stored deflate blocks ending in a sync-flush marker (what Go inflaters need)', () => {
    const codec = new HeaderCodec();
    const first = codec.compress([]);
    assert.deepEqual(first, hex('78bb e3c6a7c2 00 0400 fbff 00000000 00 0000 ffff'));
    const second = codec.compress([['a', 'b']]);
    assert.deepEqual(second, hex('00 0e00 f1ff 00000001 00000001 61 00000001 62 00 0000 ffff'));
    const whole = inflateSync(Buffer.concat([first, second]), {
      dictionary: SPDY3_DICTIONARY,
      finishFlush: 2,
    });
    assert.deepEqual(whole, Buffer.concat([hex('00000000'), encodeHeaderBlock([['a', 'b']])]));
    codec.close();
  });

  it('reports a corrupt block', async () => {
    const codec = new HeaderCodec();
    await assert.rejects(codec.decompress(hex('78f9 00000000 ffff')), /does not decompress/);
    codec.close();
  });
});
