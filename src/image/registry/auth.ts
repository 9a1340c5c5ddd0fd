/**
 * Registry credentials and the distribution auth handshake: anonymous, Basic,
 * and Bearer tokens obtained from the realm a `WWW-Authenticate` challenge
 * names (with Basic credentials, an identity token as OAuth2 refresh token,
 * or none). Credentials and tokens stay in memory and never reach a log line
 * or an error message.
 */
import { createHash } from 'node:crypto';
import type { Dispatcher } from 'undici';
import { undici } from './undici.js';
import { InvalidArgumentError, UnauthenticatedError, UnavailableError, errorMessage } from '../../errors.js';

/** Credentials for one pull, from the CRI AuthConfig. */
export interface Credentials {
  username?: string;
  password?: string;
  /** OAuth2 refresh token, exchanged at the token realm. */
  identityToken?: string;
  /** A bearer token sent as is. */
  registryToken?: string;
}

/** The subset of the CRI AuthConfig berth reads. */
export interface AuthConfigLike {
  username?: string;
  password?: string;
  auth?: string;
  identityToken?: string;
  registryToken?: string;
}

/** Credentials from a CRI AuthConfig; `auth` is base64("user:password"). */
export function credentialsFrom(auth: AuthConfigLike | undefined): Credentials {
  if (!auth) return {};
  const out: Credentials = {};
  if (auth.username || auth.password) {
    out.username = auth.username ?? '';
    out.password = auth.password ?? '';
  } else if (auth.auth) {
    const decoded = Buffer.from(auth.auth, 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    if (colon < 0) throw new InvalidArgumentError('auth.auth is not base64 of "username:password"');
    out.username = decoded.slice(0, colon);
    out.password = decoded.slice(colon + 1);
  }
  if (auth.identityToken) out.identityToken = auth.identityToken;
  if (auth.registryToken) out.registryToken = auth.registryToken;
  return out;
}

/** A stable, non-reversible key for caches and dedupe (never the secret itself). */
export function credentialsKey(creds: Credentials): string {
  if (!creds.username && !creds.password && !creds.identityToken && !creds.registryToken) return 'anonymous';
  return createHash('sha256')
    .update(JSON.stringify([creds.username, creds.password, creds.identityToken, creds.registryToken]))
    .digest('hex')
    .slice(0, 32);
}

export function hasBasic(creds: Credentials): boolean {
  return creds.username !== undefined && (creds.username !== '' || creds.password !== '');
}

export interface Challenge {
  scheme: string;
  params: Record<string, string>;
}

/**
 * Parses a `WWW-Authenticate` header: `Bearer realm="…",service="…",scope="…"`
 * or `Basic realm="…"` (several challenges may be comma-joined).
 */
export function parseChallenges(header: string | string[] | undefined): Challenge[] {
  const text = Array.isArray(header) ? header.join(', ') : (header ?? '');
  const out: Challenge[] = [];
  const re = /\s*([A-Za-z][\w!#$%&'*+.^`|~-]*)(?:\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*)))?\s*,?/gy;
  let current: Challenge | undefined;
  let m: RegExpExecArray | null;
  while (re.lastIndex < text.length && (m = re.exec(text)) !== null) {
    if (m[0] === '') break;
    const [, name, quoted, bare] = m;
    if (quoted === undefined && bare === undefined) {
      // A bare token is a scheme; its parameters follow.
      current = { scheme: name.toLowerCase(), params: {} };
      out.push(current);
    } else if (current) {
      current.params[name.toLowerCase()] = (quoted ?? bare ?? '').replace(/\\(.)/g, '$1');
    }
  }
  return out;
}

interface CachedToken {
  token: string;
  expiresAt: number;
}

/** Tokens by endpoint, scope and credentials, reused until shortly before they expire. */
export class TokenCache {
  private readonly tokens = new Map<string, CachedToken>();

  get(key: string): string | undefined {
    const t = this.tokens.get(key);
    if (!t) return undefined;
    if (Date.now() >= t.expiresAt) {
      this.tokens.delete(key);
      return undefined;
    }
    return t.token;
  }

  set(key: string, token: string, expiresInSeconds: number): void {
    // Renew a little early; the spec's minimum lifetime is 60 s.
    const ttl = Math.max(10, expiresInSeconds - 10) * 1000;
    this.tokens.set(key, { token, expiresAt: Date.now() + ttl });
    if (this.tokens.size > 1000) this.tokens.delete(this.tokens.keys().next().value!);
  }
}

export function basicHeader(creds: Credentials): string {
  return `Basic ${Buffer.from(`${creds.username ?? ''}:${creds.password ?? ''}`).toString('base64')}`;
}

/**
 * Asks the realm of a Bearer challenge for a token. `what` names the
 * registry in errors.
 */
export async function fetchToken(
  challenge: Challenge,
  scope: string,
  creds: Credentials,
  dispatcher: Dispatcher,
  what: string,
  signal?: AbortSignal,
): Promise<{ token: string; expiresIn: number }> {
  const realm = challenge.params.realm;
  if (!realm) throw new UnavailableError(`${what}: the Bearer challenge names no realm`);
  let url: URL;
  try {
    url = new URL(realm);
  } catch {
    throw new UnavailableError(`${what}: the token realm ${JSON.stringify(realm)} is not a URL`);
  }
  const service = challenge.params.service;
  const scopes = [scope, ...(challenge.params.scope ? [challenge.params.scope] : [])].filter(
    (s, i, all) => all.indexOf(s) === i,
  );
  let res: Dispatcher.ResponseData;
  try {
    if (creds.identityToken) {
      // OAuth2 refresh-token grant (docker's identity token).
      const form = new URLSearchParams({
        grant_type: 'refresh_token',
        refresh_token: creds.identityToken,
        client_id: 'berth',
        ...(service ? { service } : {}),
        scope: scopes.join(' '),
      });
      res = await (
        await undici()
      ).request(url, {
        method: 'POST',
        dispatcher,
        signal,
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: form.toString(),
      });
    } else {
      if (service) url.searchParams.set('service', service);
      for (const s of scopes) url.searchParams.append('scope', s);
      res = await (
        await undici()
      ).request(url, {
        method: 'GET',
        dispatcher,
        signal,
        headers: hasBasic(creds) ? { authorization: basicHeader(creds) } : {},
      });
    }
  } catch (err) {
    if (signal?.aborted) throw err;
    throw new UnavailableError(`${what}: cannot reach the token service ${url.origin}: ${errorMessage(err)}`);
  }
  const text = await res.body.text();
  if (res.statusCode === 401 || res.statusCode === 403) {
    throw new UnauthenticatedError(
      `${what}: the token service ${url.origin} refused the credentials (HTTP ${res.statusCode})`,
    );
  }
  if (res.statusCode !== 200) {
    throw new UnavailableError(`${what}: the token service ${url.origin} answered HTTP ${res.statusCode}`);
  }
  let body: { token?: string; access_token?: string; expires_in?: number };
  try {
    body = JSON.parse(text) as typeof body;
  } catch {
    throw new UnavailableError(
      `${what}: the token service ${url.origin} answered something that is not JSON`,
    );
  }
  const token = body.token || body.access_token;
  if (!token) throw new UnavailableError(`${what}: the token service ${url.origin} returned no token`);
  return { token, expiresIn: typeof body.expires_in === 'number' ? body.expires_in : 60 };
}
