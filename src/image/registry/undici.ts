/**
 * The two parts of undici berth uses, an Agent (connection pools) and the
 * request API, loaded on the first pull rather than at start-up: a daemon
 * that never pulls does not carry them.
 *
 * Loading is spread over event-loop turns. undici's entry point loads about
 * a hundred modules (fetch, WebSocket, caches, mocks) in one synchronous
 * go, ~75 ms here during which no gRPC call is answered; the Agent and the
 * request API alone are a quarter of that, and are required a slice at a
 * time (each slice a few ms) with a turn in between; HTTP/2 is left out.
 */
import { Module, createRequire } from 'node:module';
import type { Agent as AgentClass, Dispatcher } from 'undici';

const require = createRequire(import.meta.url);

const AGENT = 'undici/lib/dispatcher/agent.js';
const REQUEST_API = 'undici/lib/api/api-request.js';

/**
 * Modules required one per turn, each bringing in its own dependencies not
 * yet loaded. undici has no package `exports` map, so these paths are
 * public to Node; its version is locked.
 */
const SLICES = [
  'node:http',
  'undici/lib/core/errors.js',
  'undici/lib/core/tree.js',
  'undici/lib/core/util.js',
  'undici/lib/core/diagnostics.js',
  'undici/lib/core/request.js',
  'undici/lib/llhttp/constants.js',
  'undici/lib/dispatcher/client-h1.js',
  'undici/lib/dispatcher/client.js',
  AGENT,
  REQUEST_API,
] as const;

/**
 * berth speaks HTTP/1.1 to registries (its Agents set allowH2: false: a
 * connection per blob, as many as the pull runs in parallel, on undici's
 * long-proven HTTP/1.1 client). undici's client module requires its HTTP/2
 * client all the same (2,000 lines to compile, and node:http2 where gRPC has
 * not loaded it yet); a stand-in that refuses takes its place.
 */
function withoutHttp2Client(): void {
  const path = require.resolve('undici/lib/dispatcher/client-h2.js');
  if (require.cache[path]) return;
  const standIn = new Module(path);
  standIn.filename = path;
  standIn.loaded = true;
  standIn.exports = () => {
    throw new Error('HTTP/2 to registries is not enabled in berth (allowH2 is false)');
  };
  require.cache[path] = standIn;
}

export type RequestOptions = Omit<Dispatcher.RequestOptions, 'origin' | 'path'> & {
  dispatcher: Dispatcher;
};

export interface Undici {
  Agent: typeof AgentClass;
  /** undici.request(url, options), always on the given dispatcher. */
  request(url: URL, options: RequestOptions): Promise<Dispatcher.ResponseData>;
}

type ApiRequest = (this: Dispatcher, options: Dispatcher.RequestOptions) => Promise<Dispatcher.ResponseData>;

async function load(): Promise<Undici> {
  withoutHttp2Client();
  for (const slice of SLICES) {
    require(slice);
    await new Promise((resolve) => setImmediate(resolve));
  }
  // Loaded by now: these only look them up.
  const Agent = require(AGENT) as typeof AgentClass;
  const apiRequest = require(REQUEST_API) as ApiRequest;
  return {
    Agent,
    // What undici's top-level request() does with a URL before handing it to the dispatcher.
    request: async (url, { dispatcher, ...options }) => {
      const res = await apiRequest.call(dispatcher, {
        ...options,
        origin: url.origin,
        path: url.search ? `${url.pathname}${url.search}` : url.pathname,
      });
      // An unfinished body emits 'error' when destroyed (a pull giving up on it, or
      // its abort signal firing). Whoever still reads it sees the error through its
      // own listener or iterator; unheard, it would take the daemon down.
      res.body.on('error', ignoreBodyError);
      return res;
    },
  };
}

function ignoreBodyError(): void {}

let loading: Promise<Undici> | undefined;

export function undici(): Promise<Undici> {
  loading ??= load();
  return loading;
}
