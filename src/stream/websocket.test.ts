import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { WS_COMMAND_PROTOCOLS, decodeChannelMessage, encodeChannelMessage } from './websocket.js';

const v5 = WS_COMMAND_PROTOCOLS['v5.channel.k8s.io'];
const v4 = WS_COMMAND_PROTOCOLS['v4.channel.k8s.io'];
const b64 = WS_COMMAND_PROTOCOLS['v4.base64.channel.k8s.io'];

describe('WebSocket channel messages', () => {
  it('prefixes binary messages with the channel byte', () => {
    assert.deepEqual(encodeChannelMessage(v4, 1, Buffer.from('hi')), Buffer.from([1, 0x68, 0x69]));
    assert.deepEqual(decodeChannelMessage(v4, Buffer.from([0, 0x61]), true), {
      type: 'data',
      channel: 0,
      data: Buffer.from('a'),
    });
  });

  it('sends base64 protocols as text: channel digit then base64', () => {
    assert.equal(encodeChannelMessage(b64, 2, Buffer.from('hello')), '2aGVsbG8=');
    assert.deepEqual(decodeChannelMessage(b64, '0aGk=', false), {
      type: 'data',
      channel: 0,
      data: Buffer.from('hi'),
    });
    assert.deepEqual(decodeChannelMessage(b64, 'x', false), { type: 'invalid' });
  });

  it('understands the v5 close signal only in v5', () => {
    assert.deepEqual(decodeChannelMessage(v5, Buffer.from([255, 0]), true), { type: 'close', channel: 0 });
    assert.deepEqual(decodeChannelMessage(v4, Buffer.from([255, 0]), true), {
      type: 'data',
      channel: 255,
      data: Buffer.from([0]),
    });
    assert.deepEqual(decodeChannelMessage(v5, Buffer.alloc(0), true), { type: 'invalid' });
  });
});
