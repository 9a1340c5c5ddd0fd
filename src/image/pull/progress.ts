/**
 * The stall watchdog of one pull: transfers (manifest and blob requests)
 * report the bytes they receive; when transfers are under way and none has
 * received a byte for the timeout, the pull is aborted with an error naming
 * the image and the stalled blob.
 */
import { UnavailableError } from '../../errors.js';

export interface Transfer {
  /** "blob sha256:…" or "manifest …". */
  name: string;
  size?: number;
  bytes: number;
  lastByteAt: number;
}

export class Watchdog {
  private readonly active = new Set<Transfer>();
  private readonly timer: NodeJS.Timeout;
  /** The last moment any transfer received a byte, or one started. */
  private lastProgress = Date.now();

  constructor(
    private readonly image: string,
    private readonly timeoutMs: number,
    private readonly controller: AbortController,
  ) {
    this.timer = setInterval(() => this.check(), Math.min(1000, Math.max(50, timeoutMs / 4)));
    this.timer.unref();
  }

  /** Starts watching a transfer; call the returned function when it ends. */
  watch(transfer: Transfer): () => void {
    this.active.add(transfer);
    this.lastProgress = Math.max(this.lastProgress, Date.now());
    return () => {
      this.lastProgress = Math.max(this.lastProgress, transfer.lastByteAt, Date.now());
      this.active.delete(transfer);
    };
  }

  private check(): void {
    if (this.active.size === 0 || this.controller.signal.aborted) return;
    let latest = this.lastProgress;
    for (const t of this.active) latest = Math.max(latest, t.lastByteAt);
    const now = Date.now();
    if (now - latest < this.timeoutMs) return;
    const stalled = [...this.active]
      .sort((a, b) => a.lastByteAt - b.lastByteAt)
      .map((t) => `${t.name} (${t.bytes}${t.size !== undefined ? ` of ${t.size}` : ''} bytes received)`);
    this.controller.abort(
      new UnavailableError(
        `pull of ${this.image} cancelled: no data for ${Math.round(this.timeoutMs / 1000)} s; stalled on ${stalled.join(', ')}`,
      ),
    );
  }

  stop(): void {
    clearInterval(this.timer);
  }
}
