/**
 * Attach through conmon's attach socket. The socket is SOCK_SEQPACKET: each
 * message conmon sends is one read of the container's output, its first byte
 * naming the pipe (2 stdout, 3 stderr); what berth sends is written raw to the
 * container's stdin, and shutting down the write side is stdin's EOF. Node's
 * net module only speaks SOCK_STREAM, so a tiny relay holds the socket: perl
 * (perl-base is Essential on Debian, so always there) with its core Socket
 * module. It frames each received message as a 4-byte big-endian length plus
 * the message on its stdout, which keeps message (and so pipe) boundaries
 * across the byte pipe; it first writes an empty frame once connected.
 */
import type { Writable } from 'node:stream';
import { basename, dirname } from 'node:path';
import { ctlMessage, WIN_RESIZE_EVENT, writeCtl } from '../../conmon/ctl.js';
import { FailedPreconditionError } from '../errors.js';
import { startProcess } from '../util/run.js';

export const PERL_PATH = '/usr/bin/perl';

/** conmon's pipe numbers in the first byte of each attach message. */
export const ATTACH_PIPE_STDOUT = 2;
export const ATTACH_PIPE_STDERR = 3;

/** conmon reads at most 32 KiB per message; stay well below. */
const STDIN_MESSAGE = 8192;

const RELAY = `
use strict;
use Socket;
my $path = shift @ARGV;
socket(my $s, AF_UNIX, SOCK_SEQPACKET, 0) or die "socket: $!\\n";
connect($s, pack_sockaddr_un($path)) or die "connect: $!\\n";
binmode(STDIN);
binmode(STDOUT);
syswrite(STDOUT, pack('N', 0));
my $pid = fork();
die "fork: $!\\n" unless defined $pid;
if ($pid == 0) {
  while (1) {
    my $n = sysread(STDIN, my $buf, ${STDIN_MESSAGE});
    last if !defined($n) || $n == 0;
    defined(send($s, $buf, 0)) or exit 0;
  }
  shutdown($s, 1);
  exit 0;
}
close(STDIN);
while (1) {
  my $r = recv($s, my $buf, 65536, 0);
  last if !defined($r) || length($buf) == 0;
  my $out = pack('N', length($buf)) . $buf;
  while (length($out)) {
    my $w = syswrite(STDOUT, $out);
    exit 0 unless defined $w;
    substr($out, 0, $w) = '';
  }
}
kill('TERM', $pid);
exit 0;
`;

export interface AttachSession {
  write(data: Buffer): void;
  /** EOF on the container's stdin side of this attach. */
  closeStdin(): void;
  resize(width: number, height: number): void;
  /** Copies output to the writers until conmon closes the socket. */
  pump(stdout: Writable | null, stderr: Writable | null): Promise<void>;
  close(): void;
}

/** Splits the relay's length-prefixed frames. */
export class FrameSplitter {
  private buffer: Buffer = Buffer.alloc(0);

  push(chunk: Buffer): Buffer[] {
    this.buffer = this.buffer.length ? Buffer.concat([this.buffer, chunk]) : chunk;
    const messages: Buffer[] = [];
    while (this.buffer.length >= 4) {
      const length = this.buffer.readUInt32BE(0);
      if (this.buffer.length < 4 + length) break;
      messages.push(this.buffer.subarray(4, 4 + length));
      this.buffer = this.buffer.subarray(4 + length);
    }
    return messages;
  }
}

export async function openAttach(socketPath: string, ctlPath: string): Promise<AttachSession> {
  // Relative to its directory: a unix socket path may not exceed 108 bytes.
  const relay = startProcess({
    file: PERL_PATH,
    args: ['-e', RELAY, basename(socketPath)],
    cwd: dirname(socketPath),
    env: process.env,
    streams: [0, 1, 2],
  });
  try {
    await relay.started;
  } catch (err) {
    throw new FailedPreconditionError(`cannot attach through ${socketPath}: ${(err as Error).message}`);
  }
  const relayIn = relay.streams.get(0)!;
  const relayOut = relay.streams.get(1)!;
  const relayErr = relay.streams.get(2)!;
  for (const stream of [relayIn, relayOut, relayErr]) stream.on('error', () => undefined);
  let diagnostics = '';
  relayErr.on('data', (chunk: Buffer) => {
    if (diagnostics.length < 4096) diagnostics += chunk.toString();
  });
  const splitter = new FrameSplitter();
  const early: Buffer[] = [];
  await new Promise<void>((resolve, reject) => {
    const onData = (chunk: Buffer) => {
      const messages = splitter.push(chunk);
      if (messages.length === 0) return;
      relayOut.off('data', onData);
      relayOut.pause();
      early.push(...messages.slice(1));
      resolve();
    };
    const refuse = () =>
      reject(
        new FailedPreconditionError(
          `cannot attach through ${socketPath}: ${diagnostics.trim() || 'the relay exited'}`,
        ),
      );
    relayOut.on('data', onData);
    // Settled already (resolve) when the relay's greeting came first.
    void relay.done.then(
      () => (relayErr.closed ? refuse() : relayErr.once('close', refuse)), // its last words first
      refuse,
    );
  });

  let closed = false;
  return {
    write(data: Buffer) {
      if (closed || relayIn.writableEnded) return;
      relayIn.write(data);
    },
    closeStdin() {
      if (!relayIn.writableEnded) relayIn.end();
    },
    resize(width: number, height: number) {
      writeCtl(ctlPath, ctlMessage(WIN_RESIZE_EVENT, height, width)).catch(() => undefined);
    },
    pump(stdout: Writable | null, stderr: Writable | null): Promise<void> {
      return new Promise((resolve) => {
        const out = relayOut;
        const deliver = (message: Buffer) => {
          if (message.length < 1) return;
          const target =
            message[0] === ATTACH_PIPE_STDERR ? stderr : message[0] === ATTACH_PIPE_STDOUT ? stdout : null;
          if (!target || target.destroyed || target.writableEnded) return;
          if (!target.write(message.subarray(1))) {
            out.pause();
            target.once('drain', () => out.resume());
          }
        };
        early.splice(0).forEach(deliver);
        out.on('data', (chunk: Buffer) => splitter.push(chunk).forEach(deliver));
        out.once('end', () => resolve());
        out.once('close', () => resolve());
        out.resume();
      });
    },
    close() {
      if (closed) return;
      closed = true;
      relayIn.destroy();
      relay.kill('SIGTERM');
    },
  };
}
