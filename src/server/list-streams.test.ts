import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Image } from '../generated/api.js';
import { chunkBySize } from './list-streams.js';

function image(i: number, tagBytes = 10): Image {
  return Image.fromPartial({ id: `sha256:${String(i).padStart(64, '0')}`, repoTags: ['x'.repeat(tagBytes)] });
}

test('chunks keep every item once, in order, under the byte limit', () => {
  const items = Array.from({ length: 1000 }, (_, i) => image(i));
  const one = Image.encode(items[0]).finish().length + 6;
  const limit = one * 7 + 3;
  const chunks = chunkBySize(items, Image, limit);
  assert.deepEqual(chunks.flat(), items);
  assert.ok(chunks.every((c) => c.length === 7 || c === chunks[chunks.length - 1]));
  for (const chunk of chunks) {
    assert.ok(chunk.length > 0);
    const encoded = chunk.reduce((n, item) => n + Image.encode(item).finish().length + 6, 0);
    assert.ok(encoded <= limit);
  }
});

test('no chunks for no items; an oversized item travels alone', () => {
  assert.deepEqual(chunkBySize([], Image, 100), []);
  const big = image(1, 500);
  const small = image(2);
  const chunks = chunkBySize([small, big, small], Image, 200);
  assert.deepEqual(chunks, [[small], [big], [small]]);
});
