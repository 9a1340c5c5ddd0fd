/**
 * Single-use tokens for stream URLs: random (not guessable), valid for a TTL,
 * and bounded in number so a flood of Exec calls cannot grow memory without
 * limit. A token is removed when it is used or expires.
 */
import { randomBytes } from 'node:crypto';
import { ResourceExhaustedError } from '../errors.js';

export class TokenCache<T> {
  private readonly entries = new Map<string, { value: T; expires: number; timer: NodeJS.Timeout }>();

  constructor(
    private readonly ttlMs: () => number,
    private readonly maxInFlight: () => number,
  ) {}

  /** Stores a value; returns its token (URL-safe). */
  insert(value: T): string {
    if (this.entries.size >= this.maxInFlight()) {
      throw new ResourceExhaustedError(
        `too many stream requests waiting for a client (${this.entries.size}, streaming.max_in_flight); try again later`,
      );
    }
    const token = randomBytes(24).toString('base64url');
    const ttl = this.ttlMs();
    const timer = setTimeout(() => this.entries.delete(token), ttl);
    timer.unref();
    this.entries.set(token, { value, expires: Date.now() + ttl, timer });
    return token;
  }

  /** Takes the value of a token once; undefined if unknown, used or expired. */
  consume(token: string): T | undefined {
    const entry = this.entries.get(token);
    if (!entry) return undefined;
    this.entries.delete(token);
    clearTimeout(entry.timer);
    if (Date.now() > entry.expires) return undefined;
    return entry.value;
  }

  /** True while a token is valid (without spending it). */
  has(token: string): boolean {
    const entry = this.entries.get(token);
    return entry !== undefined && Date.now() <= entry.expires;
  }

  get size(): number {
    return this.entries.size;
  }

  clear(): void {
    for (const entry of this.entries.values()) clearTimeout(entry.timer);
    this.entries.clear();
  }
}
