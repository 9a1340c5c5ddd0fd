import { findCniNetwork } from '../sandbox/cni-config.js';
import { renderConfig } from '../config/render.js';
import type { ServerContext } from './context.js';
import type { RuntimeImpl } from './rpc.js';
import { StatusResponse, type RuntimeCondition } from '../generated/api.js';

export function statusRpcs(ctx: ServerContext): RuntimeImpl {
  return {
    status: async (request) => {
      const config = ctx.config();
      const network = await ctx.network.ready();
      const conditions: RuntimeCondition[] = [
        { type: 'RuntimeReady', status: true, reason: '', message: '' },
        network.ok
          ? { type: 'NetworkReady', status: true, reason: '', message: '' }
          : { type: 'NetworkReady', status: false, reason: network.reason, message: network.message },
      ];
      const info: Record<string, string> = {};
      if (request.verbose) {
        info.config = renderConfig(config);
        info.configFiles = JSON.stringify(ctx.configFiles);
        info.cgroupDriver = ctx.cgroupDriver;
        info.podCidrs = JSON.stringify(ctx.podCidrs);
        const lookup = await findCniNetwork(config.network.cni_conf_dir, config.network.network_name);
        if (lookup.ok)
          info.network = JSON.stringify({ name: lookup.network.name, file: lookup.network.file });
      }
      const handlers = Object.keys(config.runtime.handlers)
        .sort()
        .map((name) => ({
          name,
          features: { recursiveReadOnlyMounts: false, userNamespaces: false },
        }));
      return StatusResponse.fromPartial({
        status: { conditions },
        info,
        runtimeHandlers: handlers,
        features: { supplementalGroupsPolicy: false, userNamespacesHostNetwork: false },
      });
    },
  };
}
