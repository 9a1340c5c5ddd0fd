/**
 * The files a pod's containers see as /etc/resolv.conf, /etc/hostname and
 * /etc/hosts, written atomically into the pod's directory.
 */
import { readFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import { hostname as osHostname } from 'node:os';
import { join } from 'node:path';
import { FailedPreconditionError, InvalidArgumentError, errorMessage } from '../errors.js';
import { writeFileReplace } from '../util/atomic-file.js';

/** CRI DNSConfig. */
export interface PodDnsConfig {
  servers: string[];
  searches: string[];
  options: string[];
}

// kubelet's limits (pkg/kubelet/network/dns): 32 search domains, 2048 characters.
const MAX_SEARCHES = 32;
const MAX_SEARCH_CHARS = 2048;
const DNS_NAME =
  /^(?=.{1,253}\.?$)[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?$/;
const DNS_OPTION = /^[A-Za-z0-9_-]+(:[A-Za-z0-9_.-]+)?$/;
// sethostname(2) takes at most 64 bytes.
const HOSTNAME =
  /^(?=.{1,64}$)[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$/;

export const HOST_RESOLV_CONF = '/etc/resolv.conf';
export const HOST_HOSTS = '/etc/hosts';

export function isEmptyDns(dns: PodDnsConfig | undefined): boolean {
  return !dns || (dns.servers.length === 0 && dns.searches.length === 0 && dns.options.length === 0);
}

/** Checks every entry; a bad one is an InvalidArgument naming it (it would corrupt the file). */
export function validateDnsConfig(podId: string, dns: PodDnsConfig): void {
  for (const server of dns.servers) {
    // A zone may follow a link-local IPv6 server (fe80::1%eth0).
    const address = server.includes(':') ? server.replace(/%[A-Za-z0-9_.-]+$/, '') : server;
    if (isIP(address) === 0) {
      throw new InvalidArgumentError(
        `pod ${podId}: DNS server ${JSON.stringify(server)} is not an IP address`,
      );
    }
  }
  if (dns.searches.length > MAX_SEARCHES) {
    throw new InvalidArgumentError(
      `pod ${podId}: ${dns.searches.length} DNS search domains given, at most ${MAX_SEARCHES} allowed`,
    );
  }
  if (dns.searches.join(' ').length > MAX_SEARCH_CHARS) {
    throw new InvalidArgumentError(
      `pod ${podId}: DNS search list is longer than ${MAX_SEARCH_CHARS} characters`,
    );
  }
  for (const search of dns.searches) {
    if (!DNS_NAME.test(search)) {
      throw new InvalidArgumentError(
        `pod ${podId}: DNS search domain ${JSON.stringify(search)} is not a valid DNS name`,
      );
    }
  }
  for (const option of dns.options) {
    if (!DNS_OPTION.test(option)) {
      throw new InvalidArgumentError(
        `pod ${podId}: DNS option ${JSON.stringify(option)} is not of the form name or name:value`,
      );
    }
  }
}

/** resolv.conf text for a (validated, non-empty) DNSConfig. */
export function renderResolvConf(dns: PodDnsConfig): string {
  const lines: string[] = [];
  if (dns.searches.length) lines.push(`search ${dns.searches.join(' ')}`);
  for (const server of dns.servers) lines.push(`nameserver ${server}`);
  if (dns.options.length) lines.push(`options ${dns.options.join(' ')}`);
  return lines.join('\n') + '\n';
}

/** Validates the hostname the pod asks for; an empty one means the node's. */
export function podHostname(podId: string, requested: string): string {
  const name = requested === '' ? osHostname() : requested;
  if (!HOSTNAME.test(name)) {
    throw new InvalidArgumentError(
      `pod ${podId}: hostname ${JSON.stringify(name)} is not a valid host name (letters, digits, '-', '.', at most 64)`,
    );
  }
  return name;
}

/** /etc/hosts for a pod with its own network: localhost entries plus each pod IP under the hostname. */
export function renderHosts(hostname: string, ips: string[]): string {
  const lines = [
    '# Kubernetes-managed hosts file (written by berth).',
    '127.0.0.1\tlocalhost',
    '::1\tlocalhost ip6-localhost ip6-loopback',
    'fe00::0\tip6-localnet',
    'fe00::0\tip6-mcastprefix',
    'fe00::1\tip6-allnodes',
    'fe00::2\tip6-allrouters',
  ];
  for (const ip of ips) lines.push(`${ip}\t${hostname}`);
  return lines.join('\n') + '\n';
}

export interface PodFilesInput {
  podId: string;
  /** The pod's directory (created if missing). */
  podDir: string;
  /** From PodSandboxConfig.hostname; '' means the node's hostname. */
  hostname: string;
  dns?: PodDnsConfig;
  /** Host network pods see the node's /etc/hosts. */
  hostNetwork: boolean;
  /** Pod IPs (primary first); may be empty before the network is attached. */
  ips: string[];
  /** Overridable for tests. */
  hostResolvConf?: string;
  hostHosts?: string;
}

export interface PodFiles {
  hostname: string;
  hostnamePath: string;
  resolvConfPath: string;
  hostsPath: string;
}

export function podFilePaths(podDir: string): Omit<PodFiles, 'hostname'> {
  return {
    hostnamePath: join(podDir, 'hostname'),
    resolvConfPath: join(podDir, 'resolv.conf'),
    hostsPath: join(podDir, 'hosts'),
  };
}

async function readHostFile(path: string, what: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    throw new FailedPreconditionError(`cannot read the node's ${what} ${path}: ${errorMessage(err)}`, {
      cause: err,
    });
  }
}

/**
 * Writes hostname, resolv.conf and hosts into the pod dir (mode 0644: any
 * container user reads them). With no DNSConfig the node's resolv.conf is
 * copied, which is what kubelet expects for dnsPolicy Default. Validation
 * happens before anything is written.
 */
export async function writePodFiles(input: PodFilesInput): Promise<PodFiles> {
  const hostname = podHostname(input.podId, input.hostname);
  if (input.dns) validateDnsConfig(input.podId, input.dns);
  const resolv = isEmptyDns(input.dns)
    ? await readHostFile(input.hostResolvConf ?? HOST_RESOLV_CONF, 'resolv.conf')
    : renderResolvConf(input.dns!);
  const hosts = input.hostNetwork
    ? await readHostFile(input.hostHosts ?? HOST_HOSTS, 'hosts file')
    : renderHosts(hostname, input.ips);
  const paths = podFilePaths(input.podDir);
  // No fsync: these only matter while the pod's processes live, and a power loss ends those too.
  await Promise.all([
    writeFileReplace(paths.hostnamePath, hostname + '\n', { mode: 0o644 }),
    writeFileReplace(paths.resolvConfPath, resolv, { mode: 0o644 }),
    writeFileReplace(paths.hostsPath, hosts, { mode: 0o644 }),
  ]);
  return { hostname, ...paths };
}

/** Rewrites the pod's hosts file once its IPs are known (own network only). */
export async function writePodHosts(podDir: string, hostname: string, ips: string[]): Promise<string> {
  const path = podFilePaths(podDir).hostsPath;
  await writeFileReplace(path, renderHosts(hostname, ips), { mode: 0o644 });
  return path;
}
