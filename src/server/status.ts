import { findCniNetwork } from '../sandbox/cni-config.js';
import { renderConfig } from '../config/render.js';
import type { ServerContext } from './context.js';
import type { RuntimeImpl } from './rpc.js';
import { StatusResponse, type RuntimeCondition } from '../generated/api.js';
import { configuredHandlers } from '../oci/handlers.js';
import { supportsRecursiveReadOnly } from '../oci/spec/index.js';
import { handlerSupportsUserns, usernsSupport } from '../oci/userns/support.js';

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
      // Recursive read-only mounts where the handler's runtime reports `rro` (runc does).
      // The CRI names the default handler "" (kubelet and critest look it up so).
      const configured = configuredHandlers(config);
      const entries = [...configured].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
      const fallback = configured.get(config.runtime.default_handler);
      if (fallback && !configured.has('')) entries.unshift(['', fallback]);
      // Pod user namespaces where the self-test passed (ID-mapped layers work here) and the handler is runc.
      const userns = await usernsSupport(config.root);
      const handlers = await Promise.all(
        entries.map(async ([name, handler]) => ({
          name,
          features: {
            recursiveReadOnlyMounts: await supportsRecursiveReadOnly(handler),
            userNamespaces: userns.ok && handlerSupportsUserns(handler),
          },
        })),
      );
      return StatusResponse.fromPartial({
        status: { conditions },
        info,
        runtimeHandlers: handlers,
        // Merge and Strict are both implemented by the spec builder (src/oci/spec/user.ts).
        features: { supplementalGroupsPolicy: true, userNamespacesHostNetwork: false },
      });
    },
  };
}
