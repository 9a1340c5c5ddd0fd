import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout } from 'node:timers/promises';
import { TokenCache } from './tokens.js';

describe('stream tokens', () => {
  it('are random, URL-safe and single-use', () => {
    const cache = new TokenCache<string>(
      () => 60_000,
      () => 10,
    );
    const a = cache.insert('a');
    const b = cache.insert('b');
    assert.notEqual(a, b);
    assert.match(a, /^[A-Za-z0-9_-]{32}$/);
    assert.equal(cache.consume(a), 'a');
    assert.equal(cache.consume(a), undefined);
    assert.equal(cache.has(b), true);
    cache.clear();
  });

  it('expire after their TTL', async () => {
    const cache = new TokenCache<string>(
      () => 30,
      () => 10,
    );
    const token = cache.insert('x');
    await setTimeout(60);
    assert.equal(cache.consume(token), undefined);
    assert.equal(cache.size, 0);
  });

  it('are bounded in number', () => {
    const cache = new TokenCache<number>(
      () => 60_000,
      () => 2,
    );
    cache.insert(1);
    const second = cache.insert(2);
    assert.throws(() => cache.insert(3), /too many stream requests/);
    cache.consume(second);
    cache.insert(3);
    cache.clear();
  });
});
