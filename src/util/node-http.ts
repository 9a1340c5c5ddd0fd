/**
 * node:http through require. An ESM import of node:http builds its namespace
 * from every export, and reading the WebSocket, MessageEvent and CloseEvent
 * getters among them loads Node's bundled undici: about 14 MiB of resident
 * memory the daemon never uses.
 */
import { createRequire } from 'node:module';
import type * as Http from 'node:http';

export const http = createRequire(import.meta.url)('node:http') as typeof Http;
