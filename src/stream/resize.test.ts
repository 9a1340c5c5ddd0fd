import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ResizeDecoder, ResizeEvents } from './resize.js';

describe('resize stream', () => {
  it('splits concatenated JSON objects across arbitrary reads', () => {
    const decoder = new ResizeDecoder();
    const text =
      '{"Width":80,"Height":24}\n{"Width":120,"Height":40}{"Width":1,"Height":"}{"}{"Width":7,"Height":9}';
    const sizes = [...text].flatMap((c) => decoder.push(c));
    assert.deepEqual(sizes, [
      { width: 80, height: 24 },
      { width: 120, height: 40 },
      { width: 7, height: 9 },
    ]);
  });

  it('ignores malformed sizes', () => {
    assert.deepEqual(
      new ResizeDecoder().push('{"Width":-1,"Height":2}{"Width":99999999,"Height":2}{oops}'),
      [],
    );
  });

  it('hands the size received before a listener to that listener', () => {
    const events = new ResizeEvents();
    events.emit({ width: 10, height: 5 });
    const seen: number[] = [];
    events.listen((s) => seen.push(s.width));
    events.emit({ width: 11, height: 5 });
    assert.deepEqual(seen, [10, 11]);
  });
});
