/**
 * The CNI chain every benchmark runs, for berth and its peers alike: bridge +
 * host-local without ipMasq (its per-pod iptables chain would dominate a pod's
 * start here), then portmap.
 */
export const CNI_BIN_DIR = '/usr/lib/cni';

export function benchConflist(bridge: string, subnet: string): string {
  return JSON.stringify(
    {
      cniVersion: '1.0.0',
      name: `${bridge}-net`,
      plugins: [
        {
          type: 'bridge',
          bridge,
          isGateway: true,
          ipMasq: false,
          hairpinMode: true,
          ipam: { type: 'host-local', ranges: [[{ subnet }]], routes: [{ dst: '0.0.0.0/0' }] },
        },
        { type: 'portmap', capabilities: { portMappings: true } },
      ],
    },
    null,
    2,
  );
}
