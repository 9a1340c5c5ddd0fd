/**
 * Where a registry name leads: its mirrors in order, then the registry itself
 * unless it is mirror-only; per host the scheme (HTTPS, or plain HTTP for an
 * insecure host) and a keep-alive connection pool trusting the system CAs
 * plus the host's extra CA file.
 */
import { readFileSync } from 'node:fs';
import { getCACertificates, rootCertificates } from 'node:tls';
import { Agent } from 'undici';
import type { RegistryConfig } from '../../config/schema.js';
import { InvalidArgumentError, errorMessage } from '../../errors.js';
import { DOCKER_HUB } from '../reference.js';

export interface Endpoint {
  /** host[:port] as configured, e.g. "127.0.0.1:5000" or "registry-1.docker.io". */
  host: string;
  /** Try plain HTTP (and accept any certificate over HTTPS). */
  insecure: boolean;
  mirror: boolean;
  dispatcher: Agent;
}

const KEEP_ALIVE_MS = 30_000;

/** Docker Hub's API is served under another name than its references use. */
function apiHost(registry: string): string {
  return registry === DOCKER_HUB ? 'registry-1.docker.io' : registry;
}

function mirrorHost(mirror: string): string {
  // Accept "host:port" and "https://host:port/" alike.
  return mirror.replace(/^[a-z]+:\/\//i, '').replace(/\/+$/, '');
}

export class Endpoints {
  private readonly agents = new Map<string, Agent>();

  constructor(private readonly registries: () => Record<string, RegistryConfig>) {}

  private configOf(host: string): RegistryConfig | undefined {
    const all = this.registries();
    return all[host] ?? (host === 'registry-1.docker.io' ? all[DOCKER_HUB] : undefined);
  }

  private endpoint(host: string, mirror: boolean): Endpoint {
    const cfg = this.configOf(host);
    const insecure = cfg?.insecure ?? false;
    const caFile = cfg?.ca_file ?? '';
    const key = `${host}\0${insecure}\0${caFile}`;
    let agent = this.agents.get(key);
    if (!agent) {
      let ca: string[] | undefined;
      if (caFile) {
        let extra: string;
        try {
          extra = readFileSync(caFile, 'utf8');
        } catch (err) {
          throw new InvalidArgumentError(
            `registry ${host}: cannot read ca_file ${caFile}: ${errorMessage(err)}`,
          );
        }
        ca = [...new Set([...rootCertificates, ...getCACertificates('system')]), extra];
      } else {
        ca = [...new Set([...rootCertificates, ...getCACertificates('system')])];
      }
      agent = new Agent({
        keepAliveTimeout: KEEP_ALIVE_MS,
        keepAliveMaxTimeout: 10 * KEEP_ALIVE_MS,
        connections: 16,
        connect: { ca, rejectUnauthorized: !insecure, timeout: 15_000 },
      });
      this.agents.set(key, agent);
    }
    return { host, insecure, mirror, dispatcher: agent };
  }

  /** The endpoints to try for a registry, in order. */
  forRegistry(registry: string): Endpoint[] {
    const host = apiHost(registry);
    const cfg = this.configOf(registry) ?? this.configOf(host);
    const out = (cfg?.mirrors ?? []).map((m) => this.endpoint(mirrorHost(m), true));
    if (!cfg?.mirror_only) out.push(this.endpoint(host, false));
    if (out.length === 0) {
      throw new InvalidArgumentError(`registry ${registry} is mirror_only but has no mirrors configured`);
    }
    return out;
  }

  /** Closes every pooled connection. */
  async close(): Promise<void> {
    const agents = [...this.agents.values()];
    this.agents.clear();
    await Promise.all(agents.map((a) => a.close().catch(() => undefined)));
  }
}
