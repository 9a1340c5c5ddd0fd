/**
 * A TCP connection to 127.0.0.1:PORT inside a pod's network namespace. Node
 * cannot setns, so each forwarded connection runs `nsenter --net=NS` with a
 * small relay that connects inside the namespace and copies between its
 * stdio and the socket. The relay is perl (perl-base is Essential on Debian,
 * and its core Socket module is enough): unlike socat it closes its stdout as
 * soon as the port's side closes (socat keeps stdout open until both
 * directions end), and it half-closes the socket when its stdin ends, so
 * either side may finish first.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import type { Readable, Writable } from 'node:stream';

export const NSENTER_PATH = '/usr/bin/nsenter';
export const PERL_PATH = '/usr/bin/perl';
/** How long the client's direction may go on after the port's side has closed. */
export const HALF_CLOSE_GRACE_MS = 1000;

const TCP_RELAY = `
use strict;
use Socket qw(PF_INET SOCK_STREAM IPPROTO_TCP TCP_NODELAY pack_sockaddr_in inet_aton);
my $port = shift @ARGV;
socket(my $s, PF_INET, SOCK_STREAM, 0) or die "socket: $!\n";
connect($s, pack_sockaddr_in($port, inet_aton('127.0.0.1'))) or die "connect to 127.0.0.1:$port: $!\n";
setsockopt($s, IPPROTO_TCP, TCP_NODELAY, 1);
$SIG{PIPE} = 'IGNORE';
my $pid = fork();
die "fork: $!\n" unless defined $pid;
my $buf;
if ($pid == 0) {
  close(STDOUT);
  open(STDERR, '>', '/dev/null');
  while (1) {
    my $n = sysread(STDIN, $buf, 131072);
    last if !defined($n) || $n == 0;
    for (my $off = 0; $off < $n; ) {
      my $w = syswrite($s, $buf, $n - $off, $off);
      exit 0 unless defined $w;
      $off += $w;
    }
  }
  shutdown($s, 1);
  exit 0;
}
close(STDIN);
OUT: while (1) {
  my $n = sysread($s, $buf, 131072);
  last if !defined($n) || $n == 0;
  for (my $off = 0; $off < $n; ) {
    my $w = syswrite(STDOUT, $buf, $n - $off, $off);
    last OUT unless defined $w;
    $off += $w;
  }
}
close(STDOUT);
waitpid($pid, 0);
exit 0;
`;

export interface NetnsConnection {
  /** Bytes to the port. End it to half-close. */
  input: Writable;
  /** Bytes from the port; ends when the port's side closes. */
  output: Readable;
  /** Resolves with null once the relay ends cleanly, else with the reason it failed. */
  done: Promise<string | null>;
  /**
   * Like `done`, but once the port's side has closed (output ended) waits at
   * most graceMs for the client's side before ending the relay: clients such
   * as kubectl treat the remote close as the end of the connection and never
   * half-close themselves. (CRI-O gives the other direction a grace period too.)
   */
  settled(graceMs: number): Promise<string | null>;
  kill(): void;
}

export function dialInNetns(netnsPath: string, port: number): NetnsConnection {
  const child: ChildProcess = spawn(
    NSENTER_PATH,
    [`--net=${netnsPath}`, '--', PERL_PATH, '-e', TCP_RELAY, String(port)],
    { stdio: ['pipe', 'pipe', 'pipe'] },
  );
  child.stdin!.on('error', () => undefined);
  child.stdout!.on('error', () => undefined);
  let diagnostics = '';
  let killed = false;
  child.stderr!.on('data', (chunk: Buffer) => {
    if (diagnostics.length < 4096) diagnostics += chunk.toString();
  });
  const done = new Promise<string | null>((resolve) => {
    child.once('error', (err) => resolve(`cannot run ${NSENTER_PATH}: ${err.message}`));
    child.once('close', (code, signal) => {
      // Ended by berth (the client reset the stream, or the grace ran out): not a failure.
      if (code === 0 || killed) return resolve(null);
      const reason = diagnostics.trim().split('\n')[0];
      resolve(reason || (signal ? `relay killed by ${signal}` : `relay exited with ${code}`));
    });
  });
  const outputEnded = new Promise<void>((resolve) => {
    child.stdout!.once('end', () => resolve());
    child.stdout!.once('close', () => resolve());
  });
  const kill = () => {
    // The relay's writer half (a forked child) ends with its stdin.
    child.stdin!.destroy();
    if (child.exitCode === null && child.signalCode === null) {
      killed = true;
      child.kill('SIGKILL');
    }
  };
  return {
    input: child.stdin!,
    output: child.stdout!,
    done,
    async settled(graceMs: number) {
      const result = await Promise.race([done, outputEnded.then(() => 'output-ended' as const)]);
      if (result !== 'output-ended') return result;
      let timer: NodeJS.Timeout | undefined;
      const graced = await Promise.race([
        done,
        new Promise<'grace'>((resolve) => (timer = setTimeout(() => resolve('grace'), graceMs))),
      ]);
      clearTimeout(timer);
      if (graced !== 'grace') return graced;
      kill();
      return null;
    },
    kill,
  };
}
