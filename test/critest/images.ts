/**
 * Stand-ins for every Linux image critest (cri-tools pkg/validate, pkg/framework,
 * pkg/benchmark; v1.32–v1.34) pulls, built from the host's dynamic busybox by
 * test/helpers/image-builder.ts and pushed to the local registry under the
 * repository paths critest names (berth's mirrors send registry.k8s.io, gcr.io,
 * k8s.gcr.io, docker.io and public.ecr.aws there).
 *
 * What each spec asserts of its image, and how the stand-in provides it:
 * - busybox:1.29-2 (the default image): sh, sleep, top, id, ping, brctl,
 *   netstat, mount, hostname…; `nobody` in /etc/passwd. Debian's busybox lacks
 *   `pgrep` (container "exec" specs) and `ipcs` (HostIpc specs): shell shims.
 * - nginx:1.14-2: a process named `nginx` whose pid is in /var/run/nginx.pid
 *   (HostPID), "master process" on PID 1's command line in its own PID
 *   namespace (ContainerPID), HTTP 200 on :80 (networking, port-forward).
 * - hostnet-nginx-amd64: the same on :12003 (host-network port-forward).
 * - httpd:2.4.39-4: HTTP 200 on :80 and a log line naming httpd.
 * - nonewprivs:1.3: prints "Effective uid: N" from a setuid-root program (N=0
 *   unless no_new_privs stopped the setuid bit).
 * - test-image-user-*: USER 1002, www-data, 1003:1004, www-data:1004.
 * - test-image-predefined-group: default-user (1000) also in group 50000.
 * - test-image-{1,2,3,latest,digest}, test-image-tag:{test,all}: distinct
 *   images (a marker file each); test-image-tags:{1,2,3}: one image, three tags.
 *   The pinned upstream digest of test-image-digest cannot be reproduced.
 * - benchmark listing images public.ecr.aws/docker/library/busybox:<tag>.
 */
import {
  buildImage,
  buildIndex,
  busyboxRootfs,
  dir,
  file,
  hardlink,
  pushToRegistry,
  type BuiltImage,
  type BuiltIndex,
  type ImageSpec,
  type LayerSpec,
  type MediaTypes,
  type TarEntry,
} from '../helpers/image-builder.js';

/**
 * The busybox rootfs with its applets as hard links to /bin/busybox, as in the
 * upstream busybox images. With symlinks a masked path such as /bin/ls (the
 * MaskedPaths spec) would follow the link and mask busybox itself.
 */
async function hardlinkedRootfs(): Promise<TarEntry[]> {
  return (await busyboxRootfs()).map((e) =>
    e.type === 'symlink' && e.linkname === 'busybox' && e.path.startsWith('bin/')
      ? hardlink(e.path, 'bin/busybox')
      : e,
  );
}

/** busybox 1.36's /etc/passwd and /etc/group (what the upstream images are built FROM). */
export const BUSYBOX_PASSWD = [
  'root:x:0:0:root:/root:/bin/sh',
  'daemon:x:1:1:daemon:/usr/sbin:/bin/false',
  'bin:x:2:2:bin:/bin:/bin/false',
  'sys:x:3:3:sys:/dev:/bin/false',
  'sync:x:4:100:sync:/bin:/bin/sync',
  'mail:x:8:8:mail:/var/spool/mail:/bin/false',
  'www-data:x:33:33:www-data:/var/www:/bin/false',
  'operator:x:37:37:Operator:/var:/bin/false',
  'nobody:x:65534:65534:nobody:/home:/bin/false',
  '',
].join('\n');

export const BUSYBOX_GROUP = [
  'root:x:0:',
  'daemon:x:1:',
  'bin:x:2:',
  'sys:x:3:',
  'adm:x:4:',
  'tty:x:5:',
  'disk:x:6:',
  'lp:x:7:',
  'mail:x:8:',
  'kmem:x:9:',
  'wheel:x:10:root',
  'cdrom:x:11:',
  'dialout:x:18:',
  'floppy:x:19:',
  'video:x:28:',
  'audio:x:29:',
  'tape:x:32:',
  'www-data:x:33:',
  'operator:x:37:',
  'utmp:x:43:',
  'plugdev:x:46:',
  'staff:x:50:',
  'lock:x:54:',
  'netdev:x:82:',
  'users:x:100:',
  'nogroup:x:65534:',
  '',
].join('\n');

const script = (path: string, body: string) => file(path, body, { mode: 0o755 });

/** pgrep: pids of processes whose name (comm) matches the pattern, exit 1 if none. */
const PGREP = `#!/bin/sh
# pgrep stand-in (Debian's busybox has none): pgrep PATTERN
[ $# -ge 1 ] || { echo "usage: pgrep PATTERN" >&2; exit 2; }
pattern="$1"
found=1
for d in /proc/[0-9]*; do
  name=$(cat "$d/comm" 2>/dev/null) || continue
  if echo "$name" | grep -q -- "$pattern"; then
    echo "\${d#/proc/}"
    found=0
  fi
done
exit $found
`;

/** ipcs -m: System V shared memory segments of this IPC namespace, from /proc/sysvipc/shm. */
const IPCS = `#!/bin/sh
# ipcs stand-in (Debian's busybox has none): only -m (shared memory) is listed.
case "\${1:--m}" in
-m|-a) ;;
*) echo "ipcs: only -m is supported by this stand-in" >&2; exit 1 ;;
esac
echo
echo "------ Shared Memory Segments --------"
echo "key        shmid      owner      perms      bytes      nattch     status"
# columns: key shmid perms size cpid lpid nattch uid ...
awk 'NR > 1 { printf "0x%08x %-10s %-10s %-10s %-10s %-10s\\n", $1, $2, $8, $3, $4, $7 }' /proc/sysvipc/shm
echo
`;

const SHIMS: LayerSpec = { entries: [dir('bin'), script('bin/pgrep', PGREP), script('bin/ipcs', IPCS)] };

/**
 * nginx stand-in. Re-execs itself with "master process" as an argument so PID
 * 1's command line reads like nginx's master; keeps the shell (named nginx by
 * the kernel, from the script's file name) as the master whose pid goes to
 * /var/run/nginx.pid; busybox httpd serves the pages; SIGTERM stops both.
 */
const NGINX = `#!/bin/sh
# nginx stand-in for berth's critest run (busybox httpd behind a process named nginx).
if [ "$1" != "master process" ]; then
  exec "$0" "master process" "$@"
fi
port="\${NGINX_PORT:-80}"
mkdir -p /var/run /var/log/nginx
echo $$ > /var/run/nginx.pid
httpd -f -p "$port" -h /usr/share/nginx/html &
worker=$!
trap 'kill $worker 2>/dev/null; rm -f /var/run/nginx.pid; exit 0' TERM INT QUIT
echo "nginx: master process listening on port $port"
wait $worker
`;

const NGINX_LAYER: LayerSpec = {
  entries: [
    dir('usr/sbin'),
    script('usr/sbin/nginx', NGINX),
    dir('var/run'),
    dir('var/log'),
    dir('var/log/nginx'),
    dir('usr/share'),
    dir('usr/share/nginx'),
    dir('usr/share/nginx/html'),
    file('usr/share/nginx/html/index.html', '<html><body><h1>Welcome to nginx!</h1></body></html>\n'),
    file('usr/share/nginx/html/50x.html', '<html><body><h1>An error occurred.</h1></body></html>\n'),
  ],
};

const HTTPD = `#!/bin/sh
# httpd stand-in for berth's critest run (busybox httpd in the foreground).
httpd -f -p 80 -h /usr/local/apache2/htdocs &
server=$!
trap 'kill $server 2>/dev/null; exit 0' TERM INT QUIT
echo "httpd (busybox stand-in for Apache httpd 2.4.39): serving /usr/local/apache2/htdocs on port 80" >&2
wait $server
`;

const HTTPD_LAYER: LayerSpec = {
  entries: [
    dir('usr/local'),
    dir('usr/local/bin'),
    script('usr/local/bin/httpd-foreground', HTTPD),
    dir('usr/local/apache2'),
    dir('usr/local/apache2/htdocs'),
    file('usr/local/apache2/htdocs/index.html', '<html><body><h1>It works!</h1></body></html>\n'),
  ],
};

/**
 * nonewprivs stand-in: a setuid-root copy of busybox whose `id` applet
 * /etc/busybox.conf allows to keep root. Under no_new_privs the kernel ignores
 * the setuid bit, the copy cannot switch to root and fails; the caller's own
 * effective uid (read from /proc/self/status) is then the answer.
 */
const NNP = `#!/bin/sh
# nonewprivs stand-in: prints the effective uid a setuid-root program runs with.
if ! euid=$(/usr/local/suid/busybox id -u 2>/dev/null); then
  euid=$(awk '/^Uid:/ { print $3 }' /proc/self/status)
fi
echo "Effective uid: $euid"
`;

async function nnpLayer(): Promise<LayerSpec> {
  const { readFile } = await import('node:fs/promises');
  return {
    entries: [
      dir('etc'),
      file('etc/busybox.conf', '[SUID]\nid = ssx root.root\n', { mode: 0o644 }),
      dir('usr/local'),
      dir('usr/local/bin'),
      dir('usr/local/suid'),
      file('usr/local/suid/busybox', await readFile('/usr/bin/busybox'), { mode: 0o4755 }),
      script('usr/local/bin/nnp', NNP),
    ],
  };
}

export interface StandIn {
  /** Reference exactly as critest names it (registry host included). */
  ref: string;
  image: BuiltImage | BuiltIndex;
}

/** Splits "registry.k8s.io/e2e-test-images/busybox:1.29-2" into repository path and tag. */
export function repositoryAndTag(ref: string): { host: string; repository: string; tag: string } {
  const slash = ref.indexOf('/');
  const host = ref.slice(0, slash);
  const rest = ref.slice(slash + 1);
  const colon = rest.lastIndexOf(':');
  return colon > rest.lastIndexOf('/')
    ? { host, repository: rest.slice(0, colon), tag: rest.slice(colon + 1) }
    : { host, repository: rest, tag: 'latest' };
}

const E2E = 'registry.k8s.io/e2e-test-images/';
const STAGING = 'gcr.io/k8s-staging-cri-tools/';
const ECR = 'public.ecr.aws/docker/library/';

/** Every stand-in critest pulls, keyed by reference. `arch` is the host's GOARCH. */
export async function buildStandIns(arch = 'amd64'): Promise<StandIn[]> {
  const rootfs = await hardlinkedRootfs();
  const base = (spec: ImageSpec): ImageSpec => ({
    architecture: arch,
    ...spec,
    base: false,
    layers: [
      {
        entries: [
          ...rootfs,
          file('etc/passwd', spec.passwd ?? BUSYBOX_PASSWD),
          file('etc/group', spec.group ?? BUSYBOX_GROUP),
        ],
      },
      SHIMS,
      ...(spec.layers ?? []),
    ],
  });
  // Upstream images are multi-arch Docker manifest lists; so are these (the
  // extra platforms are small fakes that cannot run, for platform selection).
  const list = async (spec: ImageSpec, mediaTypes: MediaTypes = 'docker') =>
    buildIndex([await buildImage(base({ ...spec, mediaTypes }))], { mediaTypes });
  const single = async (spec: ImageSpec) => buildImage(base(spec));
  const marker = (name: string): LayerSpec => ({ entries: [file(name, '')] });

  const out: StandIn[] = [];
  const add = (ref: string, image: BuiltImage | BuiltIndex) => out.push({ ref, image });

  add(`${E2E}busybox:1.29-2`, await list({ config: { cmd: ['sh'] } }));
  add(
    `${E2E}nginx:1.14-2`,
    await list({
      layers: [NGINX_LAYER],
      config: { cmd: ['nginx', '-g', 'daemon off;'], exposedPorts: ['80/tcp'], stopSignal: 'SIGTERM' },
    }),
  );
  add(
    `${STAGING}hostnet-nginx-${arch}:latest`,
    await single({
      layers: [NGINX_LAYER],
      config: {
        cmd: ['nginx', '-g', 'daemon off;'],
        env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', 'NGINX_PORT=12003'],
        exposedPorts: ['12003/tcp'],
      },
      mediaTypes: 'docker',
    }),
  );
  add(
    `${E2E}httpd:2.4.39-4`,
    await list({ layers: [HTTPD_LAYER], config: { cmd: ['httpd-foreground'], exposedPorts: ['80/tcp'] } }),
  );
  add(`${E2E}nonewprivs:1.3`, await list({ layers: [await nnpLayer()], config: { cmd: ['nnp'] } }));

  const users: [string, string][] = [
    ['test-image-user-uid', '1002'],
    ['test-image-user-username', 'www-data'],
    ['test-image-user-uid-group', '1003:1004'],
    ['test-image-user-username-group', 'www-data:1004'],
  ];
  for (const [name, user] of users) {
    add(`${STAGING}${name}:latest`, await list({ config: { cmd: ['sh'], user } }, 'oci'));
  }
  add(
    `${STAGING}test-image-predefined-group:latest`,
    await list(
      {
        passwd: `${BUSYBOX_PASSWD}default-user:x:1000:1000::/home/default-user:/bin/sh\n`,
        group: `${BUSYBOX_GROUP}default-user:x:1000:\ngroup-defined-in-image:x:50000:default-user\n`,
        layers: [{ entries: [dir('home'), dir('home/default-user', { uid: 1000, gid: 1000 })] }],
        config: { cmd: ['sh'], user: '1000' },
      },
      'oci',
    ),
  );
  for (const name of [
    'test-image-1',
    'test-image-2',
    'test-image-3',
    'test-image-latest',
    'test-image-digest',
  ]) {
    add(`${STAGING}${name}:latest`, await list({ layers: [marker(name)], config: { cmd: ['sh'] } }));
  }
  const same = await list({ layers: [marker('same-image')], config: { cmd: ['sh'] } });
  for (const tag of ['1', '2', '3']) add(`${STAGING}test-image-tags:${tag}`, same);
  for (const tag of ['test', 'all']) {
    add(`${STAGING}test-image-tag:${tag}`, await list({ layers: [marker(tag)], config: { cmd: ['sh'] } }));
  }
  for (const tag of ['1.35.0-glibc', '1-uclibc', '1', '1-glibc', '1-musl']) {
    add(`${ECR}busybox:${tag}`, await list({ layers: [marker(`busybox-${tag}`)], config: { cmd: ['sh'] } }));
  }
  return out;
}

/** Pushes every stand-in to the registry at `registryUrl` under its repository path and tag. */
export async function pushStandIns(registryUrl: string, standIns: readonly StandIn[]): Promise<void> {
  for (const { ref, image } of standIns) {
    const { repository, tag } = repositoryAndTag(ref);
    await pushToRegistry(registryUrl, repository, tag, image);
  }
}

/** Registry hosts critest's references name (sent to the local registry by berth's mirrors). */
export const MIRRORED_REGISTRIES = ['registry.k8s.io', 'gcr.io', 'k8s.gcr.io', 'docker.io', 'public.ecr.aws'];
