import { readFileSync } from 'node:fs';
import type { RuntimeImpl } from './rpc.js';

/** kubelet's CRI version string that every runtime answers with. */
const KUBELET_API_VERSION = '0.1.0';

function packageVersion(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as {
    version: string;
  };
  return pkg.version;
}

export const BERTH_VERSION = packageVersion();

export function versionRpcs(): RuntimeImpl {
  return {
    version: async () => ({
      version: KUBELET_API_VERSION,
      runtimeName: 'berth',
      runtimeVersion: BERTH_VERSION,
      runtimeApiVersion: 'v1',
    }),
  };
}
