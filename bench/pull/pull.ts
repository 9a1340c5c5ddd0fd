/**
 * bench/pull: berth's PullImage against `skopeo copy docker://… oci:…` for a
 * ~100 MB image of 10 layers served by Debian's docker-registry on 127.0.0.1,
 * alternating, 5 runs each (medians). While berth pulls, the bench samples
 * berth's RSS (peak, from VmHWM reset before each pull) and calls ListImages
 * back to back to measure its latency (p99): the event loop must stay free.
 *
 * Beside skopeo's blob copy, the peers that also unpack, in the same runs:
 * `skopeo copy … containers-storage:` into a fresh overlay store (the path
 * CRI-O's pulls take, containers/image into containers/storage) and, when
 * Debian's containerd is installed, containerd 1.6's CRI PullImage (overlayfs
 * snapshotter, image removed before each run).
 *
 * Then, after a quiet spell longer than an idle layer worker lives, one more
 * berth pull: what a node mostly sees.
 *
 * Run by hand (not part of npm test), as root:
 *   npm run build && node dist/bench/pull/pull.js [--runs 5] [--layers 10] [--mib 100]
 *     [--peers skopeo-storage,containerd] [--quiet-spell 35]
 * Targets: throughput ratio berth/skopeo >= 1.0, peak RSS <= 150 MiB, p99 <= 20 ms.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { gunzipSync } from 'node:zlib';
import { startBerth } from '../../test/helpers/berth-process.js';
import { startRegistry } from '../../test/helpers/registry.js';
import { buildImage, file, type LayerSpec, type TarEntry } from '../../test/helpers/image-builder.js';
import {
  ImageSpec,
  ListImagesRequest,
  PullImageRequest,
  RemoveImageRequest,
} from '../../src/generated/api.js';
import { runChecked } from '../../src/util/run.js';
import { unmountAll } from '../../src/sandbox/mounts.js';
import { CNI_BIN_DIR } from '../lib/cni.js';
import { containerdInstalled, startContainerd, type RunningContainerd } from '../lib/containerd.js';
import { median, percentile } from '../lib/stats.js';
import { rssBytes, threadCpuDelta, threadCpuMs } from '../lib/proc.js';
import { LAYER_WORKER_IDLE_MS } from '../../src/image/layer/ingest.js';
import { leanUnpackMs } from './floor.js';
import { startDelayProxy, type DelayProxy } from '../lib/delay-proxy.js';

const { values: args } = parseArgs({
  options: {
    runs: { type: 'string', default: '5' },
    layers: { type: 'string', default: '10' },
    mib: { type: 'string', default: '100' },
    /** Peers that unpack too, besides the skopeo blob copy the target names. */
    peers: { type: 'string', default: 'skopeo-storage,containerd' },
    /** Extra TOML for berth's config (A/B runs of image.* settings). */
    'berth-toml': { type: 'string', default: '' },
    /** Seconds of nothing before one last pull; 0 skips it. Longer than an extra layer worker lives. */
    'quiet-spell': { type: 'string', default: String(LAYER_WORKER_IDLE_MS / 1000 + 5) },
    /** A round trip to the registry of this many ms (a delaying relay in front of it), for berth and skopeo alike. */
    rtt: { type: 'string', default: '0' },
    /** Writes berth's log at debug level here (every layer's timing; every ListImages too). */
    'debug-log': { type: 'string', default: '' },
  },
});
const QUIET_SPELL_MS = Number(args['quiet-spell']) * 1000;
const RUNS = Number(args.runs);
const LAYERS = Number(args.layers);
const TARGET_BYTES = Number(args.mib) * 1024 * 1024;

/** Text-like data: compresses roughly 3:1 with gzip, like binaries and libraries do. */
function textish(size: number, seed: number): Buffer {
  const words: string[] = [];
  for (let i = 0; i < 512; i++) {
    words.push(
      createHash('sha256')
        .update(`${seed}:${i}`)
        .digest('hex')
        .slice(0, 3 + (i % 9)),
    );
  }
  const out = Buffer.alloc(size);
  let off = 0;
  let n = seed;
  while (off < size) {
    n = (n * 1103515245 + 12345) & 0x7fffffff;
    off += out.write(words[n % words.length] + (n % 7 === 0 ? '\n' : ' '), off);
  }
  return out;
}

/** Layers of about TARGET_BYTES gzipped in all: a random half (incompressible) and a text half. */
/**
 * CPU time, on one core, of what a runtime must do to a layer and skopeo
 * does not: inflate it and hash the tar (diff ID). Hashing the blob, which
 * both do, is left out. Divided by the cores, it bounds berth's pull time
 * from below whatever berth does around it.
 */
function unpackFloorMs(layers: readonly { data: Buffer }[]): number {
  let best = Infinity;
  for (let round = 0; round < 3; round++) {
    const t = performance.now();
    for (const layer of layers) {
      const tar = gunzipSync(layer.data, { chunkSize: 256 * 1024 });
      createHash('sha256').update(tar).digest();
    }
    best = Math.min(best, performance.now() - t);
  }
  return best;
}

function layerSpecs(): LayerSpec[] {
  const perLayer = Math.floor(TARGET_BYTES / LAYERS);
  const specs: LayerSpec[] = [];
  for (let l = 0; l < LAYERS - 1; l++) {
    const entries: TarEntry[] = [];
    const files = 16;
    for (let f = 0; f < files; f++) {
      const size = Math.floor(perLayer / files);
      // Half the files random (≈ size compressed), half text (≈ size/3 compressed).
      entries.push(
        file(`data/l${l}/f${f}`, f % 2 === 0 ? randomBytes(size * 2) : textish(size * 2, l * 100 + f)),
      );
    }
    specs.push({ entries, compression: 'gzip' });
  }
  return specs;
}

/** utime + stime of a process, in seconds (USER_HZ is 100 on Linux). */
async function cpuSeconds(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/** Runs a command under GNU time: wall ms and CPU seconds (user + system). */
/**
 * Writes back every dirty page before a contestant's pull: a pull that
 * flushes (berth's syncfs, containerd's fsyncs) must not pay for what the
 * one before it left in the page cache (skopeo into containers-storage
 * leaves ~180 MB each run).
 */
async function flushDisk(): Promise<void> {
  await runChecked('/usr/bin/sync', []);
}

async function timedCommand(file: string, argv: string[]): Promise<{ ms: number; cpu: number }> {
  const t = performance.now();
  const timed = await runChecked('/usr/bin/time', ['-f', 'cpu %U %S', file, ...argv]);
  const ms = performance.now() - t;
  const used = /cpu ([\d.]+) ([\d.]+)/.exec(timed.stderr);
  return { ms, cpu: used ? Number(used[1]) + Number(used[2]) : Number.NaN };
}

function fmt(ms: number): string {
  return `${ms.toFixed(0)} ms`;
}

/** A peer pulling the same image in the same runs. */
interface Peer {
  name: string;
  ms: number[];
  cpu: number[];
  pull(run: number): Promise<{ ms: number; cpu: number }>;
}

async function main(): Promise<void> {
  const work = await mkdtemp(join(tmpdir(), 'berth-bench-pull-'));
  const registry = await startRegistry({ mode: 'open' });
  let berth: Awaited<ReturnType<typeof startBerth>> | undefined;
  let containerd: RunningContainerd | undefined;
  let proxy: DelayProxy | undefined;
  const peers: Peer[] = [];
  try {
    console.log(`building a ${LAYERS}-layer image of about ${args.mib} MiB…`);
    const image = await buildImage({ layers: layerSpecs() });
    const total = image.layers.reduce((s, l) => s + l.size, 0) + image.config.length;
    console.log(
      `image: ${image.layers.length} layers, ${(total / 1024 / 1024).toFixed(1)} MiB compressed, ` +
        `${(image.layers.reduce((s, l) => s + l.tar.length, 0) / 1024 / 1024).toFixed(1)} MiB unpacked`,
    );
    const floorMs = unpackFloorMs(image.layers);
    const leanMs = await leanUnpackMs(image.layers, cpus().length, join(work, 'lean-floor'));
    await registry.push('bench/big', 'v1', image);
    const rttMs = Number(args.rtt);
    if (rttMs > 0) {
      proxy = await startDelayProxy(registry.host, rttMs / 2);
      console.log(`the registry is reached through a relay adding ${rttMs} ms per round trip`);
    }
    const registryHost = proxy?.host ?? registry.host;
    const ref = `${registryHost}/bench/big:v1`;
    berth = await startBerth({
      args: ['--log_level', args['debug-log'] ? 'debug' : 'info'],
      toml: `${args['berth-toml'].replaceAll('\\n', '\n')}\n[image.registries."${registryHost}"]\ninsecure = true\n`,
    });
    // The template's debug level would log every RPC; info is what production runs.
    const b = berth;
    const pid = b.process.pid!;

    const wantedPeers = new Set(args.peers.split(',').filter(Boolean));
    if (wantedPeers.has('skopeo-storage')) {
      peers.push({
        name: 'skopeo-storage',
        ms: [],
        cpu: [],
        async pull(run) {
          // A fresh overlay store each run, as an empty node would have.
          const store = join(work, `storage-${run}`);
          try {
            return await timedCommand('/usr/bin/skopeo', [
              'copy',
              '--quiet',
              '--src-tls-verify=false',
              `docker://${ref}`,
              `containers-storage:[overlay@${store}/root+${store}/run]bench/big:v1`,
            ]);
          } finally {
            await unmountAll(store);
            await rm(store, { recursive: true, force: true });
          }
        },
      });
    }
    if (wantedPeers.has('containerd') && containerdInstalled()) {
      containerd = await startContainerd(join(work, 'containerd'), {
        sandboxImage: 'berth.bench/unused:1',
        cniConfDir: join(work, 'containerd-cni'),
        cniBinDir: CNI_BIN_DIR,
        plainHttpRegistries: [registryHost],
      });
      const peer = containerd;
      peers.push({
        name: 'containerd',
        ms: [],
        cpu: [],
        async pull() {
          // RemoveImage deletes synchronously, so its content and snapshots go with it.
          await peer.cri.image.removeImage(
            RemoveImageRequest.fromPartial({ image: ImageSpec.fromPartial({ image: ref }) }),
          );
          const cpu0 = await cpuSeconds(peer.pid);
          const t = performance.now();
          await peer.cri.image.pullImage(
            PullImageRequest.fromPartial({ image: ImageSpec.fromPartial({ image: ref }) }),
          );
          return { ms: performance.now() - t, cpu: (await cpuSeconds(peer.pid)) - cpu0 };
        },
      });
    } else if (wantedPeers.has('containerd')) {
      console.log('containerd not installed (apt-get install containerd): not measured');
    }

    const startRss = await rssBytes(pid);
    // ListImages on an idle berth, for comparison: the host's own latency floor.
    const idleLatencies: number[] = [];
    for (let i = 0; i < 200; i++) {
      const t = performance.now();
      await b.cri.image.listImages(ListImagesRequest.fromPartial({}));
      idleLatencies.push(performance.now() - t);
      await new Promise((r) => setTimeout(r, 20));
    }
    /** One berth pull from an empty store, with ListImages called every 20 ms meanwhile. */
    const berthPull = async () => {
      await b.cri.image.removeImage(
        RemoveImageRequest.fromPartial({ image: ImageSpec.fromPartial({ image: ref }) }),
      );
      await flushDisk();
      const rssBefore = await rssBytes(pid);
      await writeFile(`/proc/${pid}/clear_refs`, '5'); // resets VmHWM to the current RSS
      const latencies: number[] = [];
      let pulling = true;
      const lister = (async () => {
        while (pulling) {
          const t = performance.now();
          await b.cri.image.listImages(ListImagesRequest.fromPartial({}));
          latencies.push(performance.now() - t);
          await new Promise((r) => setTimeout(r, 20));
        }
      })();
      const threads0 = await threadCpuMs(pid);
      const cpu0 = await cpuSeconds(pid);
      const t0 = performance.now();
      const res = await b.cri.image.pullImage(
        PullImageRequest.fromPartial({ image: ImageSpec.fromPartial({ image: ref }) }),
      );
      const ms = performance.now() - t0;
      const cpu = (await cpuSeconds(pid)) - cpu0;
      const threads = threadCpuDelta(threads0, await threadCpuMs(pid));
      pulling = false;
      await lister;
      if (res.imageRef !== image.configDigest) throw new Error(`berth pulled ${res.imageRef}`);
      const status = await readFile(`/proc/${pid}/status`, 'utf8');
      const hwm = Number(/^VmHWM:\s+(\d+)\s+kB$/m.exec(status)?.[1] ?? NaN) * 1024;
      return { ms, cpu, threads, latencies, rssBefore, hwm };
    };
    const threadNote = (threads: [string, number][]) =>
      threads.map(([kind, ms]) => `${kind} ${ms}`).join(', ');

    const berthMs: number[] = [];
    const skopeoMs: number[] = [];
    const berthCpu: number[] = [];
    const skopeoCpu: number[] = [];
    const listLatencies: number[] = [];
    /** The first pull's share: it also loads undici and starts the layer workers. */
    let firstPullCalls = 0;
    let peakRss = 0;
    let baselineRss = 0;
    for (let run = 0; run < RUNS; run++) {
      const pulled = await berthPull();
      berthMs.push(pulled.ms);
      berthCpu.push(pulled.cpu);
      listLatencies.push(...pulled.latencies);
      if (run === 0) firstPullCalls = listLatencies.length;
      baselineRss = Math.max(baselineRss, pulled.rssBefore);
      peakRss = Math.max(peakRss, pulled.hwm);
      const hwm = pulled.hwm;

      // skopeo: into a fresh OCI layout.
      const dest = join(work, `oci-${run}`);
      await flushDisk();
      const copied = await timedCommand('/usr/bin/skopeo', [
        'copy',
        '--quiet',
        '--src-tls-verify=false',
        `docker://${ref}`,
        `oci:${dest}:v1`,
      ]);
      skopeoMs.push(copied.ms);
      skopeoCpu.push(copied.cpu);
      await rm(dest, { recursive: true, force: true });
      const peerNotes: string[] = [];
      for (const peer of peers) {
        await flushDisk();
        const result = await peer.pull(run);
        peer.ms.push(result.ms);
        peer.cpu.push(result.cpu);
        peerNotes.push(`${peer.name} ${fmt(result.ms)} (${result.cpu.toFixed(2)} CPU s)`);
      }
      console.log(
        `run ${run + 1}: berth ${fmt(berthMs.at(-1)!)} (${berthCpu.at(-1)!.toFixed(2)} CPU s, ` +
          `peak RSS ${(hwm / 1024 / 1024).toFixed(0)} MiB), ` +
          `skopeo ${fmt(skopeoMs.at(-1)!)} (${skopeoCpu.at(-1)!.toFixed(2)} CPU s)` +
          peerNotes.map((note) => `, ${note}`).join(''),
      );
      console.log(`  berth CPU ms by thread: ${threadNote(pulled.threads)}`);
    }
    // What a node mostly sees: a pull after minutes of nothing, not right after another.
    let quiet: Awaited<ReturnType<typeof berthPull>> | undefined;
    if (QUIET_SPELL_MS > 0) {
      console.log(`a quiet spell of ${QUIET_SPELL_MS / 1000} s, then one more pull…`);
      await new Promise((r) => setTimeout(r, QUIET_SPELL_MS));
      quiet = await berthPull();
      console.log(
        `after the quiet spell: berth ${fmt(quiet.ms)} (${quiet.cpu.toFixed(2)} CPU s, peak RSS ${(quiet.hwm / 1024 / 1024).toFixed(0)} MiB); ` +
          `CPU ms by thread: ${threadNote(quiet.threads)}`,
      );
    }
    const bm = median(berthMs);
    const sm = median(skopeoMs);
    const mib = total / 1024 / 1024;
    console.log('');
    console.log(`berth  PullImage   median ${fmt(bm)}  (${(mib / (bm / 1000)).toFixed(0)} MiB/s)`);
    console.log(`skopeo copy        median ${fmt(sm)}  (${(mib / (sm / 1000)).toFixed(0)} MiB/s)`);
    console.log(`throughput ratio berth/skopeo: ${(sm / bm).toFixed(2)}  (target >= 1.0)`);
    for (const peer of peers) {
      const pm = median(peer.ms);
      console.log(
        `${peer.name.padEnd(18)} median ${fmt(pm)}  (${(mib / (pm / 1000)).toFixed(0)} MiB/s), ` +
          `${median(peer.cpu).toFixed(2)} CPU s; ratio berth/${peer.name}: ${(pm / bm).toFixed(2)}`,
      );
    }
    console.log(
      `floor of the work skopeo does not do (inflate + diff-ID hash, this process, no I/O): ${fmt(floorMs)} on one core, ` +
        `${fmt(floorMs / cpus().length)} spread over all ${cpus().length}; skopeo's whole copy took ${fmt(sm)}`,
    );
    console.log(
      `the least an unpacking pull does, as lean as Node allows (bench/pull/floor.ts: from memory, ${cpus().length} worker threads, ` +
        `blob and tar hashed, blob and files written, nothing checked, nothing flushed): ${fmt(leanMs)}, ` +
        `ratio to skopeo at best ${(sm / leanMs).toFixed(2)}`,
    );
    console.log(
      `CPU seconds per pull (median): berth ${median(berthCpu).toFixed(2)}, skopeo ${median(skopeoCpu).toFixed(2)} ` +
        `(berth also decompresses, hashes and unpacks every layer; skopeo only stores blobs); load average ${loadavg()
          .map((l) => l.toFixed(1))
          .join(' ')}, ${cpus().length} CPUs`,
    );
    console.log(
      `berth peak RSS during pulls: ${(peakRss / 1024 / 1024).toFixed(0)} MiB (at start ${(startRss / 1024 / 1024).toFixed(0)} MiB, between pulls up to ${(baselineRss / 1024 / 1024).toFixed(0)} MiB; target <= 150 MiB)`,
    );
    console.log(
      `ListImages during pulls: ${listLatencies.length} calls, p50 ${percentile(listLatencies, 50).toFixed(1)} ms, ` +
        `p99 ${percentile(listLatencies, 99).toFixed(1)} ms, max ${Math.max(...listLatencies).toFixed(1)} ms (target p99 <= 20 ms)`,
    );
    const later = listLatencies.slice(firstPullCalls);
    if (later.length > 0) {
      console.log(
        `  of which the first pull (cold daemon): max ${Math.max(...listLatencies.slice(0, firstPullCalls)).toFixed(1)} ms; ` +
          `the later pulls: ${later.length} calls, p99 ${percentile(later, 99).toFixed(1)} ms, max ${Math.max(...later).toFixed(1)} ms`,
      );
    }
    if (quiet) {
      console.log(
        `  the pull after the quiet spell (not in the figures above): ${quiet.latencies.length} calls, ` +
          `p99 ${percentile(quiet.latencies, 99).toFixed(1)} ms, max ${Math.max(...quiet.latencies).toFixed(1)} ms`,
      );
    }
    console.log(
      `ListImages on idle berth (same host, before the pulls): p50 ${percentile(idleLatencies, 50).toFixed(1)} ms, ` +
        `p99 ${percentile(idleLatencies, 99).toFixed(1)} ms`,
    );
  } finally {
    await containerd?.stop();
    if (berth && args['debug-log']) await writeFile(args['debug-log'], berth.logs());
    await berth?.cleanup();
    await proxy?.close();
    await registry.stop();
    await rm(work, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
