/**
 * SPDY/3.1 framing: an 8-byte header then the payload. Control frames have
 * the high bit set, version 3 and a type; data frames carry a 31-bit stream
 * ID. Header blocks stay compressed here (see headers.ts).
 */

export const SPDY_VERSION = 3;
export const FLAG_FIN = 0x01;
export const FLAG_UNIDIRECTIONAL = 0x02;
/** Largest payload the 24-bit length field can carry. */
export const MAX_FRAME_PAYLOAD = 0xffffff;

export const enum ControlType {
  SynStream = 1,
  SynReply = 2,
  RstStream = 3,
  Settings = 4,
  Ping = 6,
  GoAway = 7,
  Headers = 8,
  WindowUpdate = 9,
}

/** RST_STREAM status codes. */
export const RstStatus = {
  PROTOCOL_ERROR: 1,
  INVALID_STREAM: 2,
  REFUSED_STREAM: 3,
  CANCEL: 5,
  INTERNAL_ERROR: 6,
  STREAM_IN_USE: 8,
  STREAM_ALREADY_CLOSED: 9,
} as const;

export type Frame =
  | { type: 'data'; streamId: number; flags: number; data: Buffer }
  | {
      type: 'syn_stream';
      streamId: number;
      associatedId: number;
      priority: number;
      flags: number;
      headerBlock: Buffer;
    }
  | { type: 'syn_reply'; streamId: number; flags: number; headerBlock: Buffer }
  | { type: 'headers'; streamId: number; flags: number; headerBlock: Buffer }
  | { type: 'rst_stream'; streamId: number; status: number }
  | { type: 'settings'; flags: number; payload: Buffer }
  | { type: 'ping'; id: number }
  | { type: 'goaway'; lastGoodStreamId: number; status: number }
  | { type: 'window_update'; streamId: number; delta: number }
  | { type: 'unknown'; controlType: number; flags: number; payload: Buffer };

export class SpdyProtocolError extends Error {}

function header(control: boolean, first: number, flags: number, length: number): Buffer {
  if (length > MAX_FRAME_PAYLOAD) throw new RangeError(`SPDY frame payload of ${length} bytes is too long`);
  const out = Buffer.allocUnsafe(8);
  out.writeUInt32BE(control ? (0x80000000 | (SPDY_VERSION << 16) | first) >>> 0 : first & 0x7fffffff, 0);
  out.writeUInt32BE(((flags & 0xff) << 24) | length, 4);
  return out;
}

function control(type: ControlType, flags: number, payload: Buffer): Buffer {
  return Buffer.concat([header(true, type, flags, payload.length), payload]);
}

function u32s(...values: number[]): Buffer {
  const out = Buffer.allocUnsafe(values.length * 4);
  values.forEach((v, i) => out.writeUInt32BE(v >>> 0, i * 4));
  return out;
}

/** Data frame header only, so large payloads are written without a copy. */
export function dataFrameHeader(streamId: number, flags: number, length: number): Buffer {
  return header(false, streamId, flags, length);
}

export function encodeFrame(frame: Frame): Buffer {
  switch (frame.type) {
    case 'data':
      return Buffer.concat([dataFrameHeader(frame.streamId, frame.flags, frame.data.length), frame.data]);
    case 'syn_stream': {
      const fixed = Buffer.allocUnsafe(10);
      fixed.writeUInt32BE(frame.streamId & 0x7fffffff, 0);
      fixed.writeUInt32BE(frame.associatedId & 0x7fffffff, 4);
      fixed.writeUInt8((frame.priority & 0x7) << 5, 8);
      fixed.writeUInt8(0, 9);
      return control(ControlType.SynStream, frame.flags, Buffer.concat([fixed, frame.headerBlock]));
    }
    case 'syn_reply':
      return control(
        ControlType.SynReply,
        frame.flags,
        Buffer.concat([u32s(frame.streamId & 0x7fffffff), frame.headerBlock]),
      );
    case 'headers':
      return control(
        ControlType.Headers,
        frame.flags,
        Buffer.concat([u32s(frame.streamId & 0x7fffffff), frame.headerBlock]),
      );
    case 'rst_stream':
      return control(ControlType.RstStream, 0, u32s(frame.streamId & 0x7fffffff, frame.status));
    case 'settings':
      return control(ControlType.Settings, frame.flags, frame.payload);
    case 'ping':
      return control(ControlType.Ping, 0, u32s(frame.id));
    case 'goaway':
      return control(ControlType.GoAway, 0, u32s(frame.lastGoodStreamId & 0x7fffffff, frame.status));
    case 'window_update':
      return control(
        ControlType.WindowUpdate,
        0,
        u32s(frame.streamId & 0x7fffffff, frame.delta & 0x7fffffff),
      );
    case 'unknown':
      return control(frame.controlType as ControlType, frame.flags, frame.payload);
  }
}

function need(payload: Buffer, min: number, what: string): void {
  if (payload.length < min) {
    throw new SpdyProtocolError(
      `SPDY ${what} frame of ${payload.length} bytes is too short (at least ${min})`,
    );
  }
}

function decodeControl(type: number, flags: number, payload: Buffer): Frame {
  switch (type) {
    case ControlType.SynStream:
      need(payload, 10, 'SYN_STREAM');
      return {
        type: 'syn_stream',
        streamId: payload.readUInt32BE(0) & 0x7fffffff,
        associatedId: payload.readUInt32BE(4) & 0x7fffffff,
        priority: payload[8] >> 5,
        flags,
        headerBlock: payload.subarray(10),
      };
    case ControlType.SynReply:
      need(payload, 4, 'SYN_REPLY');
      return {
        type: 'syn_reply',
        streamId: payload.readUInt32BE(0) & 0x7fffffff,
        flags,
        headerBlock: payload.subarray(4),
      };
    case ControlType.Headers:
      need(payload, 4, 'HEADERS');
      return {
        type: 'headers',
        streamId: payload.readUInt32BE(0) & 0x7fffffff,
        flags,
        headerBlock: payload.subarray(4),
      };
    case ControlType.RstStream:
      need(payload, 8, 'RST_STREAM');
      return {
        type: 'rst_stream',
        streamId: payload.readUInt32BE(0) & 0x7fffffff,
        status: payload.readUInt32BE(4),
      };
    case ControlType.Settings:
      return { type: 'settings', flags, payload };
    case ControlType.Ping:
      need(payload, 4, 'PING');
      return { type: 'ping', id: payload.readUInt32BE(0) };
    case ControlType.GoAway:
      // SPDY/2 GOAWAY had no status; accept the short form.
      need(payload, 4, 'GOAWAY');
      return {
        type: 'goaway',
        lastGoodStreamId: payload.readUInt32BE(0) & 0x7fffffff,
        status: payload.length >= 8 ? payload.readUInt32BE(4) : 0,
      };
    case ControlType.WindowUpdate:
      need(payload, 8, 'WINDOW_UPDATE');
      return {
        type: 'window_update',
        streamId: payload.readUInt32BE(0) & 0x7fffffff,
        delta: payload.readUInt32BE(4) & 0x7fffffff,
      };
    default:
      return { type: 'unknown', controlType: type, flags, payload };
  }
}

/**
 * Splits a byte stream into frames, whatever the read boundaries: a frame may
 * arrive in pieces, or several in one chunk.
 *
 * With `streamData`, DATA payloads are handed out as they arrive, in pieces
 * (zero-copy slices of the reads), each piece a 'data' frame; only the last
 * piece of a frame carries its flags (FIN). Control frames are always whole.
 */
export class FrameParser {
  private chunks: Buffer[] = [];
  private buffered = 0;
  /** A DATA frame being passed through: its stream, flags and bytes still to come. */
  private data?: { streamId: number; flags: number; left: number };

  constructor(
    private readonly maxPayload = MAX_FRAME_PAYLOAD,
    private readonly streamData = false,
  ) {}

  /** Feeds bytes; returns the frames completed by them. */
  push(chunk: Buffer): Frame[] {
    if (chunk.length > 0) {
      this.chunks.push(chunk);
      this.buffered += chunk.length;
    }
    const frames: Frame[] = [];
    for (;;) {
      if (this.data) {
        const data = this.data;
        if (this.buffered === 0 && data.left > 0) break;
        const piece = this.takeUpTo(data.left);
        data.left -= piece.length;
        const last = data.left === 0;
        if (last) this.data = undefined;
        if (piece.length > 0 || last) {
          frames.push({ type: 'data', streamId: data.streamId, flags: last ? data.flags : 0, data: piece });
        }
        continue;
      }
      if (this.buffered < 8) break;
      const head = this.peek(8);
      const first = head.readUInt32BE(0);
      const length = head.readUInt32BE(4) & 0xffffff;
      if (length > this.maxPayload) {
        throw new SpdyProtocolError(`SPDY frame of ${length} bytes exceeds the limit of ${this.maxPayload}`);
      }
      if (this.streamData && !(first & 0x80000000)) {
        this.take(8);
        this.data = { streamId: first & 0x7fffffff, flags: head[4], left: length };
        continue;
      }
      if (this.buffered < 8 + length) break;
      const frame = this.take(8 + length);
      const flags = frame[4];
      const payload = frame.subarray(8);
      if (first & 0x80000000) {
        const version = (first >>> 16) & 0x7fff;
        if (version !== SPDY_VERSION) {
          throw new SpdyProtocolError(`SPDY control frame has version ${version}, not ${SPDY_VERSION}`);
        }
        frames.push(decodeControl(first & 0xffff, flags, payload));
      } else {
        frames.push({ type: 'data', streamId: first & 0x7fffffff, flags, data: payload });
      }
    }
    return frames;
  }

  /**
   * Copies what is held for an incomplete frame, so that the buffers it came
   * in may be reused (for readers that read into one buffer of their own).
   */
  ownPending(): void {
    if (this.buffered > 0) this.chunks = [Buffer.concat(this.chunks, this.buffered)];
  }

  /** Bytes held for an incomplete frame. */
  get pending(): number {
    return this.buffered;
  }

  private peek(n: number): Buffer {
    if (this.chunks[0].length >= n) return this.chunks[0].subarray(0, n);
    return Buffer.concat(this.chunks, n);
  }

  /** Up to n bytes from the first buffered chunk (no copy). */
  private takeUpTo(n: number): Buffer {
    if (n === 0 || this.buffered === 0) return Buffer.alloc(0);
    const first = this.chunks[0];
    if (first.length <= n) {
      this.chunks.shift();
      this.buffered -= first.length;
      return first;
    }
    this.chunks[0] = first.subarray(n);
    this.buffered -= n;
    return first.subarray(0, n);
  }

  private take(n: number): Buffer {
    const first = this.chunks[0];
    let out: Buffer;
    if (first.length >= n) {
      out = first.subarray(0, n);
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
    } else {
      out = Buffer.concat(this.chunks, n);
      let left = n;
      while (left > 0) {
        const head = this.chunks[0];
        if (head.length <= left) {
          this.chunks.shift();
          left -= head.length;
        } else {
          this.chunks[0] = head.subarray(left);
          left = 0;
        }
      }
    }
    this.buffered -= n;
    return out;
  }
}

/** The frame with every buffer it refers to copied (its source buffer may then be reused). */
export function ownFrame(frame: Frame): Frame {
  switch (frame.type) {
    case 'data':
      return { ...frame, data: Buffer.from(frame.data) };
    case 'syn_stream':
    case 'syn_reply':
    case 'headers':
      return { ...frame, headerBlock: Buffer.from(frame.headerBlock) };
    case 'settings':
    case 'unknown':
      return { ...frame, payload: Buffer.from(frame.payload) };
    default:
      return frame;
  }
}
