/**
 * berth's configuration: every key, its type, default and meaning. The TOML
 * loader, the flag parser and `berth config` are all driven by this table, so a
 * key added here is a file key, a flag and a documented setting at once.
 */

export type LeafType = 'string' | 'integer' | 'boolean' | 'string[]';
export type LeafValue = string | number | boolean | string[];

export interface LeafSpec {
  kind: 'leaf';
  type: LeafType;
  default: LeafValue;
  doc: string;
  /** Applied by SIGHUP without a restart. */
  reloadable?: boolean;
  /** Allowed values, for string keys. */
  oneOf?: readonly string[];
  /** Lower bound for integers. */
  min?: number;
}

export interface SectionSpec {
  kind: 'section';
  doc: string;
  fields: Record<string, Spec>;
}

/** A table of named tables, such as [runtime.handlers.runc]. */
export interface MapSpec {
  kind: 'map';
  doc: string;
  entry: Record<string, LeafSpec>;
  /** Entries present when no file names any. */
  defaults: Record<string, Record<string, LeafValue>>;
  reloadable?: boolean;
}

export type Spec = LeafSpec | SectionSpec | MapSpec;

const leaf = (type: LeafType, def: LeafValue, doc: string, extra: Partial<LeafSpec> = {}): LeafSpec => ({
  kind: 'leaf',
  type,
  default: def,
  doc,
  ...extra,
});

export const SCHEMA: SectionSpec = {
  kind: 'section',
  doc: 'berth configuration',
  fields: {
    root: leaf('string', '/var/lib/berth', 'Persistent state: images, layers, container records.'),
    run_root: leaf('string', '/run/berth', 'Volatile state: sockets, conmon files, runtime roots.'),
    log_level: leaf('string', 'info', 'Log level.', {
      reloadable: true,
      oneOf: ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'],
    }),
    server: {
      kind: 'section',
      doc: 'The CRI gRPC endpoint.',
      fields: {
        socket: leaf('string', '/run/berth/berth.sock', 'Unix socket kubelet and crictl connect to.'),
        max_message_bytes: leaf('integer', 16 * 1024 * 1024, 'Largest gRPC message accepted or sent.', {
          min: 4096,
        }),
        metrics_address: leaf('string', '', 'host:port for Prometheus metrics; empty disables them.'),
      },
    },
    streaming: {
      kind: 'section',
      doc: 'The HTTP server that serves Exec, Attach and PortForward URLs.',
      fields: {
        address: leaf('string', '127.0.0.1', 'Address the streaming server listens on.'),
        port: leaf('integer', 0, 'Port of the streaming server; 0 picks a free port.', { min: 0 }),
        tls_cert_file: leaf('string', '', 'PEM certificate; with tls_key_file enables HTTPS.'),
        tls_key_file: leaf('string', '', 'PEM private key for tls_cert_file.'),
        idle_timeout_seconds: leaf('integer', 4 * 3600, 'Idle streams are closed after this long.', {
          min: 1,
        }),
        token_ttl_seconds: leaf('integer', 60, 'How long a stream URL stays valid.', { min: 1 }),
        max_in_flight: leaf('integer', 64, 'Stream requests waiting for a client at once.', { min: 1 }),
      },
    },
    runtime: {
      kind: 'section',
      doc: 'OCI runtimes, conmon and cgroups.',
      fields: {
        default_handler: leaf('string', 'runc', 'Handler used when a pod names no RuntimeClass handler.'),
        cgroup_driver: leaf('string', 'auto', 'cgroupfs or systemd; auto detects.', {
          oneOf: ['auto', 'cgroupfs', 'systemd'],
        }),
        conmon_path: leaf('string', '/usr/bin/conmon', 'The conmon binary.'),
        pause_image: leaf('string', '', 'Image of the infra container; empty uses the built-in pause.'),
        pause_command: leaf('string[]', [], 'Command of the infra container; empty uses the image default.'),
        drop_infra: leaf(
          'boolean',
          false,
          "Run pods on runc/crun without an infra container when nothing needs one (no shared PID namespace, user namespace or sysctls): berth pins their network, IPC and UTS namespaces itself, as CRI-O's drop_infra_ctr. Saves a conmon and a runtime create per pod.",
        ),
        restrict_oom_score_adj: leaf(
          'string',
          'auto',
          'Clamp oom_score_adj to what berth may set: auto detects CAP_SYS_RESOURCE.',
          { oneOf: ['auto', 'true', 'false'] },
        ),
        default_sysctls: leaf('string[]', [], 'Sysctls (key=value) applied to every pod.'),
        cdi_spec_dirs: leaf(
          'string[]',
          ['/etc/cdi', '/var/run/cdi'],
          'Directories of CDI spec files (JSON or YAML) for the devices containers name (DRA, device plugins); a later directory wins for the same device.',
        ),
        container_exit_dir: leaf('string', '', 'Where conmon records exits; empty means <run_root>/exits.'),
        handlers: {
          kind: 'map',
          doc: 'RuntimeClass handlers: [runtime.handlers.NAME].',
          entry: {
            path: leaf('string', '', 'OCI runtime binary.'),
            root: leaf(
              'string',
              '',
              'State directory passed as --root; empty means <run_root>/runtimes/NAME.',
            ),
            type: leaf('string', 'oci', 'Runtime type.', { oneOf: ['oci', 'vm'] }),
            kind: leaf(
              'string',
              'auto',
              'Which runtime the binary is, for what berth does differently per runtime; auto: from its name (runc-1.2 is runc).',
              { oneOf: ['auto', 'runc', 'crun', 'runsc', 'other'] },
            ),
            monitor_cgroup: leaf('string', '', 'cgroup for conmon; empty uses the pod cgroup parent.'),
            runtime_args: leaf(
              'string[]',
              [],
              'Extra global flags for the runtime, after --root (e.g. runsc --ignore-cgroups).',
            ),
            privileged_without_host_devices: leaf(
              'boolean',
              false,
              'Privileged containers get no host devices.',
            ),
          },
          defaults: {
            runc: { path: '/usr/sbin/runc', root: '', type: 'oci' },
          },
        },
      },
    },
    image: {
      kind: 'section',
      doc: 'Image pulls and storage.',
      fields: {
        unqualified_search_registries: leaf('string[]', ['docker.io'], 'Registries tried for short names.', {
          reloadable: true,
        }),
        max_concurrent_downloads: leaf('integer', 3, 'Layers downloaded at once per pull.', { min: 1 }),
        unpack_threads: leaf(
          'integer',
          0,
          'Threads that verify, decompress and write layers; 0: one per CPU beyond the first, at most 4.',
          { min: 0 },
        ),
        sync_layers: leaf(
          'boolean',
          true,
          'Flush each unpacked layer to disk (syncfs) before it is committed, so a power loss cannot leave a layer that looks whole but holds empty files.',
        ),
        discard_unpacked_layers: leaf(
          'boolean',
          true,
          'Keep no compressed layer blob once its layer is unpacked (as CRI-O): a third less image disk and less to write per pull; a layer directory lost later comes back by pulling again, not from a kept blob.',
        ),
        pull_progress_timeout_seconds: leaf('integer', 60, 'A pull receiving no bytes for this long fails.', {
          min: 1,
          reloadable: true,
        }),
        pinned_images: leaf('string[]', [], 'Images reported pinned and never garbage collected.', {
          reloadable: true,
        }),
        registries: {
          kind: 'map',
          doc: 'Per-registry settings: [image.registries."HOST[:PORT]"].',
          reloadable: true,
          entry: {
            mirrors: leaf('string[]', [], 'Mirror hosts tried in order before the registry.'),
            mirror_only: leaf('boolean', false, 'Never contact the registry itself, only its mirrors.'),
            insecure: leaf('boolean', false, 'Use plain HTTP (and skip TLS verification) for this host.'),
            ca_file: leaf(
              'string',
              '',
              'Extra PEM CA bundle trusted for this host, besides the system store (/etc/ssl/certs, or SSL_CERT_FILE/SSL_CERT_DIR) and Node.js bundled roots.',
            ),
          },
          defaults: {},
        },
      },
    },
    network: {
      kind: 'section',
      doc: 'Pod networking through CNI plugins.',
      fields: {
        cni_conf_dir: leaf('string', '/etc/cni/net.d', 'Directory of CNI network configurations.'),
        cni_bin_dirs: leaf(
          'string[]',
          ['/usr/lib/cni', '/opt/cni/bin'],
          'Directories searched for CNI plugins.',
        ),
        network_name: leaf('string', '', 'Network to use; empty takes the first config in name order.'),
      },
    },
  },
};

/** The typed, validated configuration berth runs with. */
export interface HandlerConfig {
  path: string;
  root: string;
  type: 'oci' | 'vm';
  kind: 'auto' | 'runc' | 'crun' | 'runsc' | 'other';
  monitor_cgroup: string;
  privileged_without_host_devices: boolean;
  runtime_args: string[];
}

export interface RegistryConfig {
  mirrors: string[];
  mirror_only: boolean;
  insecure: boolean;
  ca_file: string;
}

export interface BerthConfig {
  root: string;
  run_root: string;
  log_level: 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal' | 'silent';
  server: { socket: string; max_message_bytes: number; metrics_address: string };
  streaming: {
    address: string;
    port: number;
    tls_cert_file: string;
    tls_key_file: string;
    idle_timeout_seconds: number;
    token_ttl_seconds: number;
    max_in_flight: number;
  };
  runtime: {
    default_handler: string;
    cgroup_driver: 'auto' | 'cgroupfs' | 'systemd';
    conmon_path: string;
    pause_image: string;
    pause_command: string[];
    drop_infra: boolean;
    restrict_oom_score_adj: 'auto' | 'true' | 'false';
    default_sysctls: string[];
    cdi_spec_dirs: string[];
    container_exit_dir: string;
    handlers: Record<string, HandlerConfig>;
  };
  image: {
    unqualified_search_registries: string[];
    max_concurrent_downloads: number;
    unpack_threads: number;
    sync_layers: boolean;
    discard_unpacked_layers: boolean;
    pull_progress_timeout_seconds: number;
    pinned_images: string[];
    registries: Record<string, RegistryConfig>;
  };
  network: { cni_conf_dir: string; cni_bin_dirs: string[]; network_name: string };
}
