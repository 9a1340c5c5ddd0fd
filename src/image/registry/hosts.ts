/**
 * Where a registry name leads: its mirrors in order, then the registry itself
 * unless it is mirror-only; per host the scheme (HTTPS, or plain HTTP for an
 * insecure host) and a keep-alive connection pool trusting the system CAs
 * plus the host's extra CA file (trust.ts).
 */
import { readFile } from 'node:fs/promises';
import type { SecureContext } from 'node:tls';
import type { Agent } from 'undici';
import type { RegistryConfig } from '../../config/schema.js';
import { FailedPreconditionError, errorMessage } from '../../errors.js';
import { DOCKER_HUB } from '../reference.js';
import { forgetRegistryTrust, registryTlsContext } from './trust.js';
import { undici } from './undici.js';
import { closeIdleConnections } from './http1.js';

export interface Endpoint {
  /** host[:port] as configured, e.g. "127.0.0.1:5000" or "registry-1.docker.io". */
  host: string;
  /** Try plain HTTP (and accept any certificate over HTTPS). */
  insecure: boolean;
  mirror: boolean;
  dispatcher: Agent;
  /** What the dispatcher's connections trust, for connections of berth's own (http1.ts). */
  tls: { secureContext: SecureContext; rejectUnauthorized: boolean };
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
  private readonly agents = new Map<string, { agent: Agent; tls: Endpoint['tls'] }>();

  constructor(private readonly registries: () => Record<string, RegistryConfig>) {}

  private configOf(host: string): RegistryConfig | undefined {
    const all = this.registries();
    return all[host] ?? (host === 'registry-1.docker.io' ? all[DOCKER_HUB] : undefined);
  }

  private async endpoint(host: string, mirror: boolean): Promise<Endpoint> {
    const cfg = this.configOf(host);
    const insecure = cfg?.insecure ?? false;
    const caFile = cfg?.ca_file ?? '';
    const key = `${host}\0${insecure}\0${caFile}`;
    let pool = this.agents.get(key);
    if (!pool) {
      let extraCa: string | undefined;
      if (!insecure && caFile) {
        try {
          extraCa = await readFile(caFile, 'utf8');
        } catch (err) {
          throw new FailedPreconditionError(
            `registry ${host}: cannot read ca_file ${caFile}: ${errorMessage(err)}`,
          );
        }
      }
      const { Agent } = await undici();
      // Another pull may have made the pool while the CA file (or undici) was read.
      pool = this.agents.get(key);
      if (!pool) {
        const tls = {
          secureContext: registryTlsContext({ insecure, extraCa }),
          rejectUnauthorized: !insecure,
        };
        const agent = new Agent({
          keepAliveTimeout: KEEP_ALIVE_MS,
          keepAliveMaxTimeout: 10 * KEEP_ALIVE_MS,
          connections: 16,
          // HTTP/1.1 only: see undici.ts (the HTTP/2 client is not even loaded).
          allowH2: false,
          // A context, not a CA list: given only `ca`, every new connection would
          // parse all the CAs again (~20 ms of the event loop for ~260 of them).
          connect: { ...tls, timeout: 15_000 },
        });
        pool = { agent, tls };
        this.agents.set(key, pool);
      }
    }
    return { host, insecure, mirror, dispatcher: pool.agent, tls: pool.tls };
  }

  /** The endpoints to try for a registry, in order. */
  async forRegistry(registry: string): Promise<Endpoint[]> {
    const host = apiHost(registry);
    const cfg = this.configOf(registry) ?? this.configOf(host);
    const out: Endpoint[] = [];
    for (const m of cfg?.mirrors ?? []) out.push(await this.endpoint(mirrorHost(m), true));
    if (!cfg?.mirror_only) out.push(await this.endpoint(host, false));
    if (out.length === 0) {
      throw new FailedPreconditionError(`registry ${registry} is mirror_only but has no mirrors configured`);
    }
    return out;
  }

  /**
   * Pools made from now on read the registry config, CA files and trust
   * store again. Those made so far are only forgotten, not closed: a pull in
   * flight keeps using its pool, whose idle connections close after the
   * keep-alive time.
   */
  renew(): void {
    forgetRegistryTrust();
    this.agents.clear();
  }

  /** Closes every pooled connection. */
  async close(): Promise<void> {
    closeIdleConnections();
    const agents = [...this.agents.values()];
    this.agents.clear();
    await Promise.all(agents.map((a) => a.agent.close().catch(() => undefined)));
  }
}
