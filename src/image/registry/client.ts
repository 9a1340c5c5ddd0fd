/**
 * A distribution-API client for one repository at one endpoint (a mirror or
 * the registry), for one set of credentials: manifests as bytes, blobs as
 * streams. Handles the auth challenge (one retry with Basic or a Bearer token
 * for `repository:<name>:pull`), redirects (credentials are not forwarded to
 * another origin), HTTPS-then-HTTP for insecure hosts, and maps HTTP answers
 * to berth errors.
 */
import type { Readable } from 'node:stream';
import type { Dispatcher } from 'undici';
import { undici } from './undici.js';
import { http1Request, type Http1Body } from './http1.js';
import {
  BerthError,
  NotFoundError,
  PermissionDeniedError,
  UnauthenticatedError,
  UnavailableError,
  errorMessage,
} from '../../errors.js';
import {
  basicHeader,
  credentialsKey,
  fetchToken,
  hasBasic,
  parseChallenges,
  type Credentials,
  type TokenCache,
} from './auth.js';
import type { Endpoint } from './hosts.js';

const MAX_REDIRECTS = 5;
/** Manifests larger than this are refused (the OCI distribution spec suggests 4 MiB). */
export const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;

/** Schemes that worked for insecure hosts (HTTPS or HTTP), so the next request goes straight there. */
const schemeOf = new Map<string, 'https' | 'http'>();

export interface FetchedManifest {
  bytes: Buffer;
  /** From Content-Type, without parameters (may be empty). */
  mediaType: string;
  /** Docker-Content-Digest header, if the registry sent one. */
  headerDigest?: string;
}

export interface BlobResponse {
  body: Readable;
  /** Content-Length, when announced. */
  length?: number;
}

export interface DirectBlobResponse {
  /** Read by the layer worker's batches straight from the socket (http1.ts). */
  body: Http1Body;
  length?: number;
}

/** What the auth and redirect handling needs of an answer, whichever client got it. */
interface Answer {
  statusCode: number;
  headers: Record<string, string | string[] | undefined>;
  /** Drops the body unread. */
  discard(): void;
  text(): Promise<string>;
}

interface UndiciAnswer extends Answer {
  res: Dispatcher.ResponseData;
}

interface DirectAnswer extends Answer {
  body: Http1Body;
}

type Send<A extends Answer> = (
  url: URL,
  method: 'GET' | 'HEAD',
  headers: Record<string, string>,
  signal?: AbortSignal,
) => Promise<A>;

function header(answer: Pick<Answer, 'headers'>, name: string): string | undefined {
  const v = answer.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

/** The registry's own error text (`{"errors":[{"code","message"}]}`), short. */
async function registryError(answer: Answer): Promise<string> {
  let text: string;
  try {
    text = await answer.text();
  } catch {
    return '';
  }
  try {
    const parsed = JSON.parse(text) as { errors?: { code?: string; message?: string }[] };
    const first = parsed.errors?.[0];
    if (first) return `: ${[first.code, first.message].filter(Boolean).join(' ')}`.slice(0, 300);
  } catch {
    // not JSON
  }
  return '';
}

export class RepositoryClient {
  /** The Authorization header that the last challenge called for. */
  private authorization?: string;
  private readonly what: string;

  constructor(
    readonly endpoint: Endpoint,
    readonly repository: string,
    private readonly creds: Credentials,
    private readonly tokens: TokenCache,
  ) {
    this.what = `registry ${endpoint.host}${endpoint.mirror ? ' (mirror)' : ''}`;
    // A registry token is sent as is, without waiting for a challenge.
    if (creds.registryToken) this.authorization = `Bearer ${creds.registryToken}`;
  }

  private get scope(): string {
    return `repository:${this.repository}:pull`;
  }

  private tokenKey(): string {
    return `${this.endpoint.host}\0${this.scope}\0${credentialsKey(this.creds)}`;
  }

  /** Requests through undici's pool for this endpoint. */
  private readonly viaUndici: Send<UndiciAnswer> = async (url, method, headers, signal) => {
    const res = await (
      await undici()
    ).request(url, { method, signal, dispatcher: this.endpoint.dispatcher, headers });
    return {
      statusCode: res.statusCode,
      headers: res.headers,
      discard: () => res.body.resume(),
      text: () => res.body.text(),
      res,
    };
  };

  /** Requests through berth's own HTTP/1.1 client, whose bodies the caller reads into its buffers. */
  private readonly direct: Send<DirectAnswer> = async (url, method, headers, signal) => {
    const res = await http1Request(url, method, headers, {
      secureContext: this.endpoint.tls.secureContext,
      rejectUnauthorized: this.endpoint.tls.rejectUnauthorized,
      connectTimeoutMs: 15_000,
      signal,
    });
    const body = res.body;
    return {
      statusCode: res.statusCode,
      headers: res.headers,
      discard: () => body.destroy(),
      text: () => body.text(),
      body,
    };
  };

  /** One request, trying HTTPS then HTTP on an insecure host; network failures become UNAVAILABLE. */
  private async raw<A extends Answer>(
    send: Send<A>,
    path: string,
    method: 'GET' | 'HEAD',
    headers: Record<string, string>,
    signal?: AbortSignal,
  ): Promise<A> {
    const host = this.endpoint.host;
    const known = schemeOf.get(host);
    const schemes: ('https' | 'http')[] = !this.endpoint.insecure
      ? ['https']
      : known === 'http'
        ? ['http', 'https']
        : ['https', 'http'];
    let lastError: unknown;
    for (const scheme of schemes) {
      try {
        const res = await this.follow(send, new URL(`${scheme}://${host}${path}`), method, headers, signal);
        if (this.endpoint.insecure) schemeOf.set(host, scheme);
        return res;
      } catch (err) {
        if (signal?.aborted) throw signal.reason ?? err;
        if (err instanceof BerthError) throw err;
        lastError = err;
      }
    }
    const cause = errorMessage(lastError);
    throw new UnavailableError(`${this.what}: cannot connect: ${cause}`, { cause: lastError });
  }

  /** Sends, following redirects; the Authorization header only goes to the first origin. */
  private async follow<A extends Answer>(
    send: Send<A>,
    url: URL,
    method: 'GET' | 'HEAD',
    headers: Record<string, string>,
    signal?: AbortSignal,
  ): Promise<A> {
    const origin = url.origin;
    for (let hop = 0; ; hop++) {
      const sameOrigin = url.origin === origin;
      const res = await send(
        url,
        method,
        sameOrigin
          ? headers
          : Object.fromEntries(Object.entries(headers).filter(([k]) => k !== 'authorization')),
        signal,
      );
      if (![301, 302, 303, 307, 308].includes(res.statusCode)) return res;
      const location = header(res, 'location');
      res.discard();
      if (!location || hop >= MAX_REDIRECTS) {
        throw new UnavailableError(`${this.what}: too many or empty redirects for ${url.pathname}`);
      }
      url = new URL(location, url);
    }
  }

  /**
   * A request under /v2/<repository>/, answering the auth challenge once.
   * Resolves only for 200; everything else becomes an error naming `object`.
   */
  private async get<A extends Answer>(
    send: Send<A>,
    sub: string,
    accept: string | undefined,
    object: string,
    signal?: AbortSignal,
  ): Promise<A> {
    const path = `/v2/${this.repository}/${sub}`;
    this.authorization ??= this.cachedToken();
    for (let attempt = 0; ; attempt++) {
      const headers: Record<string, string> = { 'user-agent': 'berth' };
      if (accept) headers.accept = accept;
      if (this.authorization) headers.authorization = this.authorization;
      const res = await this.raw(send, path, 'GET', headers, signal);
      if (res.statusCode === 200) return res;
      if (res.statusCode === 401 && attempt === 0) {
        const challenges = parseChallenges(res.headers['www-authenticate']);
        res.discard();
        const next = await this.answer(challenges, signal);
        if (next !== undefined && next !== headers.authorization) {
          this.authorization = next;
          continue;
        }
        throw this.unauthenticated(object, headers.authorization !== undefined);
      }
      const detail = await registryError(res);
      if (res.statusCode === 401) throw this.unauthenticated(object, true, detail);
      if (res.statusCode === 403) {
        throw new PermissionDeniedError(`${this.what}: access to ${object} denied${detail}`);
      }
      if (res.statusCode === 404) throw new NotFoundError(`${this.what}: ${object} not found${detail}`);
      throw new UnavailableError(`${this.what}: ${object}: HTTP ${res.statusCode}${detail}`);
    }
  }

  private unauthenticated(object: string, triedCredentials: boolean, detail = ''): UnauthenticatedError {
    const creds = this.creds;
    const had = hasBasic(creds) || creds.identityToken || creds.registryToken;
    return new UnauthenticatedError(
      had || triedCredentials
        ? `${this.what}: the credentials were not accepted for ${object}${detail}`
        : `${this.what}: ${object} needs credentials and none were given${detail}`,
    );
  }

  private cachedToken(): string | undefined {
    const t = this.tokens.get(this.tokenKey());
    return t === undefined ? undefined : `Bearer ${t}`;
  }

  /** The Authorization header that answers a challenge, or undefined when none can. */
  private async answer(
    challenges: ReturnType<typeof parseChallenges>,
    signal?: AbortSignal,
  ): Promise<string | undefined> {
    const bearer = challenges.find((c) => c.scheme === 'bearer');
    if (bearer) {
      if (this.creds.registryToken && !this.authorization) return `Bearer ${this.creds.registryToken}`;
      const { token, expiresIn } = await fetchToken(
        bearer,
        this.scope,
        this.creds,
        this.endpoint.dispatcher,
        this.what,
        signal,
      );
      this.tokens.set(this.tokenKey(), token, expiresIn);
      return `Bearer ${token}`;
    }
    if (challenges.some((c) => c.scheme === 'basic') && hasBasic(this.creds)) return basicHeader(this.creds);
    return undefined;
  }

  /** GET a manifest by tag or digest. */
  async manifest(
    reference: string,
    accept: readonly string[],
    signal?: AbortSignal,
  ): Promise<FetchedManifest> {
    const { res } = await this.get(
      this.viaUndici,
      `manifests/${reference}`,
      accept.join(', '),
      `manifest ${this.repository}:${reference}`.replace(':sha256:', '@sha256:'),
      signal,
    );
    const length = Number(header(res, 'content-length') ?? NaN);
    if (length > MAX_MANIFEST_BYTES) {
      res.body.destroy();
      throw new UnavailableError(
        `${this.what}: manifest ${reference} is larger than ${MAX_MANIFEST_BYTES} bytes`,
      );
    }
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of res.body as AsyncIterable<Buffer>) {
      size += chunk.length;
      if (size > MAX_MANIFEST_BYTES) {
        res.body.destroy();
        throw new UnavailableError(
          `${this.what}: manifest ${reference} is larger than ${MAX_MANIFEST_BYTES} bytes`,
        );
      }
      chunks.push(chunk);
    }
    return {
      bytes: Buffer.concat(chunks),
      mediaType: (header(res, 'content-type') ?? '').split(';')[0].trim(),
      headerDigest: header(res, 'docker-content-digest'),
    };
  }

  private getBlob<A extends Answer>(send: Send<A>, digest: string, signal?: AbortSignal): Promise<A> {
    return this.get(send, `blobs/${digest}`, undefined, `blob ${digest} of ${this.repository}`, signal);
  }

  /** GET a blob as a stream; the caller verifies it. */
  async blob(digest: string, signal?: AbortSignal): Promise<BlobResponse> {
    const { res } = await this.getBlob(this.viaUndici, digest, signal);
    const length = Number(header(res, 'content-length') ?? NaN);
    return { body: res.body, length: Number.isFinite(length) ? length : undefined };
  }

  /**
   * GET a (layer) blob through berth's own HTTP/1.1 client, its body read
   * straight into the caller's buffers; the caller verifies it.
   */
  async directBlob(digest: string, signal?: AbortSignal): Promise<DirectBlobResponse> {
    const { body } = await this.getBlob(this.direct, digest, signal);
    return { body, length: body.length };
  }

  get name(): string {
    return this.what;
  }
}
