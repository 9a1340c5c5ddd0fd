/**
 * The resize stream: a sequence of JSON objects {"Width":W,"Height":H} with
 * no separator guaranteed. Splits them by brace depth (strings respected)
 * whatever the read boundaries.
 */
import type { TerminalSize } from './types.js';

export class ResizeDecoder {
  private buffer = '';
  private depth = 0;
  private inString = false;
  private escaped = false;
  private scanned = 0;

  /** Feeds bytes; returns the sizes completed by them. Malformed objects are skipped. */
  push(chunk: Buffer | string): TerminalSize[] {
    this.buffer += chunk.toString();
    const sizes: TerminalSize[] = [];
    let start = 0;
    for (let i = this.scanned; i < this.buffer.length; i++) {
      const c = this.buffer[i];
      if (this.inString) {
        if (this.escaped) this.escaped = false;
        else if (c === '\\') this.escaped = true;
        else if (c === '"') this.inString = false;
      } else if (c === '"') this.inString = true;
      else if (c === '{') this.depth++;
      else if (c === '}' && this.depth > 0 && --this.depth === 0) {
        const size = parseSize(this.buffer.slice(start, i + 1));
        if (size) sizes.push(size);
        start = i + 1;
      } else if (this.depth === 0 && c !== '{') start = i + 1;
    }
    this.buffer = this.buffer.slice(start);
    this.scanned = this.buffer.length;
    if (this.buffer.length > 4096) this.reset();
    return sizes;
  }

  private reset(): void {
    this.buffer = '';
    this.depth = 0;
    this.inString = false;
    this.escaped = false;
    this.scanned = 0;
  }
}

function parseSize(text: string): TerminalSize | undefined {
  try {
    const value = JSON.parse(text) as { Width?: unknown; Height?: unknown };
    const width = Number(value.Width);
    const height = Number(value.Height);
    if (!Number.isInteger(width) || !Number.isInteger(height) || width < 0 || height < 0) return undefined;
    if (width > 0xffff || height > 0xffff) return undefined;
    return { width, height };
  } catch {
    return undefined;
  }
}

/** Resize events for one session; the latest size is kept for a listener that comes later. */
export class ResizeEvents {
  private listener?: (size: TerminalSize) => void;
  private latest?: TerminalSize;

  emit(size: TerminalSize): void {
    this.latest = size;
    this.listener?.(size);
  }

  /** The listener gets the size already received (the client's initial one), then each change. */
  listen(listener: (size: TerminalSize) => void): void {
    this.listener = listener;
    if (this.latest) listener(this.latest);
  }
}
