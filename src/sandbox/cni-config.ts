import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { errnoCode, errorMessage } from '../errors.js';

/** A CNI network list, normalised from .conflist or single-plugin .conf files. */
export interface CniNetworkList {
  cniVersion: string;
  name: string;
  plugins: Record<string, unknown>[];
  /** File it was read from. */
  file: string;
  /** Original bytes-level JSON, for passing to plugins unchanged. */
  raw: Record<string, unknown>;
}

export type CniLookup =
  { ok: true; network: CniNetworkList } | { ok: false; reason: string; message: string };

const EXTENSIONS = ['.conf', '.conflist', '.json'];

function normalise(file: string, raw: Record<string, unknown>): CniNetworkList {
  const name = raw.name;
  if (typeof name !== 'string' || name === '') throw new Error('has no "name"');
  const cniVersion = typeof raw.cniVersion === 'string' ? raw.cniVersion : '0.4.0';
  if (Array.isArray(raw.plugins)) {
    if (raw.plugins.length === 0) throw new Error('has an empty "plugins" list');
    return { cniVersion, name, plugins: raw.plugins as Record<string, unknown>[], file, raw };
  }
  if (typeof raw.type !== 'string') throw new Error('has neither "plugins" nor "type"');
  return { cniVersion, name, plugins: [raw], file, raw: { cniVersion, name, plugins: [raw] } };
}

/**
 * Finds the pod network: the named one, or else the first valid config file in
 * name order (as kubelet's CNI conventions expect). Invalid files are skipped
 * and named in the message if nothing usable is found.
 */
export async function findCniNetwork(confDir: string, wantedName = ''): Promise<CniLookup> {
  let names: string[];
  try {
    names = (await readdir(confDir)).filter((n) => EXTENSIONS.some((e) => n.endsWith(e))).sort();
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') {
      return {
        ok: false,
        reason: 'NetworkPluginNotReady',
        message: `CNI config directory ${confDir} does not exist`,
      };
    }
    return {
      ok: false,
      reason: 'NetworkPluginNotReady',
      message: `cannot read ${confDir}: ${errorMessage(err)}`,
    };
  }
  const problems: string[] = [];
  for (const name of names) {
    const file = join(confDir, name);
    try {
      const parsed = JSON.parse(await readFile(file, 'utf8')) as Record<string, unknown>;
      const network = normalise(file, parsed);
      if (wantedName === '' || network.name === wantedName) return { ok: true, network };
    } catch (err) {
      problems.push(`${file}: ${errorMessage(err)}`);
    }
  }
  const what = wantedName ? `no CNI network named "${wantedName}"` : 'no CNI network config';
  const detail = problems.length ? ` (invalid: ${problems.join('; ')})` : '';
  return { ok: false, reason: 'NetworkPluginNotReady', message: `${what} found in ${confDir}${detail}` };
}
