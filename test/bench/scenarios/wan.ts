/**
 * WAN scenario (issue 16): a full backup between two agents joined by an emulated WAN — 20 ms RTT,
 * 1 Gbit/s (test/bench/netns.ts: network namespaces, a shaped veth pair, relays) — with wire
 * compression none / zstd / lz4 on half-compressible data, and with a per-job bandwidth cap whose
 * achieved rate is compared with the cap (deviation printed, not asserted).
 *
 * The Ceph clusters stay on 127.0.0.1 in the root namespace, so both agents do too: only the data
 * plane crosses the WAN. The destination agent listens on a fixed loopback port and advertises the
 * entry relay (config transferAdvertiseAddress, set through test/bench/advertise-preload.ts), so the
 * coordinator hands the source agent the relay's address. Wire bytes and the wire rate are counted at
 * the entry relay (TLS records included). The CLI pipe cannot cross this path (rbd talks to Ceph
 * directly), so the "CLI" column of these rows is the same bytes copied raw through the same relays.
 *
 *   node dist/test/bench/scenarios/wan.js [--mib 256] [--rounds 1] [--cap-mib 40] [--netns-prefix rbdwan]
 */
import { randomBytes } from "node:crypto";
import path from "node:path";
import { BackupMode } from "../../../src/gen/rbdbackup/v1/agent";
import { Compression } from "../../../src/gen/rbdbackup/v1/common";
import { startAgentProcess } from "../../../src/lab/agent-process";
import { type RunningAgent, startAgent } from "../../helpers/agents";
import { backupRequest, freePort, startCoordinator, waitAgents } from "../../helpers/coordinator";
import { connectLab, rbd, uniqueName } from "../../helpers/lab";
import { busyFraction, hostCpu } from "../host-cpu";
import { onInterrupt } from "../interrupt";
import { arg, cpuOf, median, procMemMiB, resetPeakRss } from "../measure";
import { measureRttMs, measureThroughputMiBps, probeServer, startWanPath, type WanPath } from "../netns";
import { fill, follow, logTails } from "../rig";
import { runAlone } from "../scenario-main";
import type { Row, Scenario, ScenarioContext } from "./types";

const MiB = 1 << 20;
const GiB = 1 << 30;
const RTT_MS = 20;
const RATE_MBIT = 1000;

interface Variant {
  label: string;
  compression: Compression;
  capBytesPerSecond: number;
}

/** Half-compressible 4 MiB blocks: each 64 KiB is 32 KiB random then 32 KiB of repeated text. */
function halfCompressible(bytes: number): Buffer {
  const b = Buffer.alloc(bytes);
  const text = Buffer.from("rbdbackup WAN bench: the second half of each 64 KiB block compresses well. ");
  for (let off = 0; off < bytes; off += 64 * 1024) {
    randomBytes(32 * 1024).copy(b, off);
    for (let p = off + 32 * 1024; p < Math.min(off + 64 * 1024, bytes); p += text.length) text.copy(b, p);
  }
  return b;
}

interface Sample {
  secs: number[];
  wire: number[];
  wireRate: number[];
  cpuSrc: number[];
  cpuDst: number[];
  rss: number[];
  busy: number[];
}

async function run(ctx: ScenarioContext): Promise<Row[]> {
  const mib = ctx.mib;
  const capMiB = Number(arg("cap-mib", "40"));
  const variants: Variant[] = [
    { label: "none", compression: Compression.COMPRESSION_NONE, capBytesPerSecond: 0 },
    { label: "zstd", compression: Compression.COMPRESSION_ZSTD, capBytesPerSecond: 0 },
    { label: "lz4", compression: Compression.COMPRESSION_LZ4, capBytesPerSecond: 0 },
    { label: `none, cap ${capMiB} MiB/s`, compression: Compression.COMPRESSION_NONE, capBytesPerSecond: capMiB * MiB },
  ];
  const samples = new Map<string, Sample>(
    variants.map((v) => [v.label, { secs: [], wire: [], wireRate: [], cpuSrc: [], cpuDst: [], rss: [], busy: [] }]),
  );
  const rawSecs: number[] = [];
  const stops: Array<() => Promise<unknown>> = [];
  const cleanup = async () => {
    // Taken at once: the interrupt's cleanup and the finally's may overlap; each step runs once.
    for (const s of stops.splice(0).reverse()) await s().catch((e) => ctx.log(`wan cleanup: ${(e as Error).message}`));
  };
  const unhook = onInterrupt(cleanup);
  try {
    // 1. The link, checked with probes before any agent uses it.
    const echo = await probeServer("echo");
    stops.push(() => echo.close());
    const sink = await probeServer("sink");
    stops.push(() => sink.close());
    const destPort = await freePort();
    const wan: WanPath = await startWanPath(
      { prefix: arg("netns-prefix", "rbdwan"), rttMs: RTT_MS, rateMbit: RATE_MBIT },
      echo.address,
    );
    stops.push(() => wan.close());
    const rtt = median(await measureRttMs(wan.entry, 20));
    wan.setTarget(sink.address);
    const rawCheck = await measureThroughputMiBps(wan.entry, sink, Math.min(mib, 256) * MiB);
    ctx.log(
      `wan: ${wan.names.nsA} ↔ ${wan.names.nsB}, delay by ${wan.delayBy}: RTT median ${rtt.toFixed(1)} ms (aim ${RTT_MS}), raw ${rawCheck.toFixed(1)} MiB/s (cap ${(RATE_MBIT / 8.388608).toFixed(0)} MiB/s)`,
    );

    // 2. Coordinator, source agent, destination agent behind the relay.
    const coord = await startCoordinator();
    stops.push(() => coord.stop());
    const src: RunningAgent = await startAgent("site-a", { coordinator: coord.address, limits: ctx.limits });
    stops.push(() => src.stop());
    const dst = await startAgentProcess("site-b", {
      coordinator: coord.address,
      limits: ctx.limits,
      transferListen: `127.0.0.1:${destPort}`,
      nodeArgs: ["--require", path.join(__dirname, "..", "advertise-preload.js")],
      env: { RBDBACKUP_BENCH_TRANSFER_ADVERTISE: wan.entry },
      verbose: !!process.env.RBDBACKUP_TEST_VERBOSE,
    });
    stops.push(() => dst.stop());
    wan.setTarget(`127.0.0.1:${destPort}`);
    const api = coord.client;
    await waitAgents(api, 2);

    // 3. The volume: half-compressible data over the whole image.
    const cluster = await connectLab("site-a");
    stops.push(() => cluster.close());
    const io = await cluster.openIoCtx("rbd");
    stops.push(() => io.close());
    const image = uniqueName("bench-wan");
    await io.imageCreate(image, mib * MiB);
    stops.push(async () => {
      await rbd("site-a", ["snap", "purge", "--no-progress", `rbd/${image}`]).catch(() => {});
      await io.imageRemove(image);
    });
    await fill(io, image, mib * MiB, halfCompressible);

    const pids = [src.proc.pid as number, dst.proc.pid as number] as const;
    for (let r = 0; r < ctx.rounds; r++) {
      // The raw path first on even rounds, last on odd ones.
      const rawProbe = async () => {
        wan.setTarget(sink.address);
        try {
          rawSecs.push(mib / (await measureThroughputMiBps(wan.entry, sink, mib * MiB)));
        } finally {
          wan.setTarget(`127.0.0.1:${destPort}`);
        }
      };
      if (r % 2 === 0) await rawProbe();
      for (const v of r % 2 === 0 ? variants : [...variants].reverse()) {
        const s = samples.get(v.label) as Sample;
        for (const p of pids) resetPeakRss(p);
        const cpu0 = pids.map(cpuOf);
        const host0 = hostCpu();
        wan.resetCounters();
        const t = performance.now();
        const req = backupRequest(
          { cluster: "site-a", pool: "rbd", namespace: "", image },
          {
            mode: BackupMode.BACKUP_MODE_FULL,
            transfer: { compression: v.compression, bandwidthLimitBytesPerSecond: v.capBytesPerSecond },
          },
        );
        const job = await follow(api, await api.createBackup(req)).catch((e) => {
          logTails(ctx.log, "wan", [
            ["source agent", src],
            ["destination agent", dst],
          ]);
          throw e;
        });
        s.secs.push((performance.now() - t) / 1000);
        s.busy.push(busyFraction(host0, hostCpu()));
        s.cpuSrc.push(cpuOf(pids[0]) - (cpu0[0] as number));
        s.cpuDst.push(cpuOf(pids[1]) - (cpu0[1] as number));
        s.rss.push(Math.max(...pids.map((p) => procMemMiB(p, "VmHWM"))));
        const c = wan.counters;
        s.wire.push(c.fwd);
        s.wireRate.push(c.lastAt > c.firstAt ? c.fwd / MiB / ((c.lastAt - c.firstAt) / 1000) : 0);
        ctx.log(
          `wan round ${r + 1} ${v.label}: ${s.secs.at(-1)?.toFixed(2)} s, wire ${(c.fwd / MiB).toFixed(1)} MiB at ${s.wireRate.at(-1)?.toFixed(1)} MiB/s`,
        );
        await follow(api, await api.deleteBackup({ backupId: job.backupId, idempotencyKey: "" }));
      }
      if (r % 2 === 1) await rawProbe();
    }

    const rawS = median(rawSecs);
    return variants.map((v): Row => {
      const s = samples.get(v.label) as Sample;
      const ours = median(s.secs);
      const wireMiB = median(s.wire) / MiB;
      const wireRate = median(s.wireRate);
      const busy = median(s.busy);
      const perGiB = (x: number[]) => +((median(x) / (mib * MiB)) * GiB).toFixed(2);
      const lineMiBps = RATE_MBIT / 8.388608;
      const notes = [
        `"CLI" = the same ${mib} MiB copied raw through the same relays (${(mib / rawS).toFixed(1)} MiB/s; rbd cannot cross this path)`,
        `RTT ${rtt.toFixed(1)} ms (delay by ${wan.delayBy})`,
        `wire ${wireMiB.toFixed(1)} MiB for ${mib} MiB (${((wireMiB / mib) * 100).toFixed(0)}%) at ${wireRate.toFixed(1)} MiB/s`,
        `host CPU ${(busy * 100).toFixed(0)}% busy`,
      ];
      if (v.compression !== Compression.COMPRESSION_NONE && wireMiB > mib * 0.9)
        notes.push("compression requested but not on the wire (not plumbed yet, or the peer does not negotiate it)");
      if (v.capBytesPerSecond) {
        const dev = ((wireRate * MiB - v.capBytesPerSecond) / v.capBytesPerSecond) * 100;
        notes.push(
          `cap ${capMiB} MiB/s: achieved ${wireRate.toFixed(1)} MiB/s on the wire, deviation ${dev >= 0 ? "+" : ""}${dev.toFixed(1)}%`,
        );
      }
      // The link (or the cap) bound it when the wire ran at ≥ 90% of its rate; else a busy box did.
      const limit = v.capBytesPerSecond ? v.capBytesPerSecond / MiB : lineMiBps;
      const bound: Row["bound"] = wireRate >= limit * 0.9 ? "network" : busy >= 0.9 ? "CPU" : "network";
      return {
        scenario: `WAN ${RTT_MS} ms RTT ${RATE_MBIT / 1000} Gbit/s, full ${mib} MiB ½-compressible, ${v.label}`,
        cliSeconds: +rawS.toFixed(3),
        oursSeconds: +ours.toFixed(3),
        ratio: +(rawS / ours).toFixed(2),
        oursMiBps: +(mib / ours).toFixed(1),
        wireMiB: +wireMiB.toFixed(1),
        agentPeakRssMiB: +Math.max(...s.rss).toFixed(0),
        cpuPerGiB: { sourceAgent: perGiB(s.cpuSrc), destinationAgent: perGiB(s.cpuDst) },
        bound,
        note: notes.join("; "),
      };
    });
  } finally {
    unhook();
    await cleanup();
  }
}

export const wan: Scenario = {
  name: "wan",
  describe: `full backup across an emulated WAN (${RTT_MS} ms RTT, ${RATE_MBIT / 1000} Gbit/s): compression none/zstd/lz4, bandwidth cap`,
  needsRoot: true,
  // The volume on site-a; each variant's base image, each round, on site-b.
  writes: (ctx) => [
    { site: "site-a", mib: ctx.mib },
    { site: "site-b", mib: 4 * ctx.mib * ctx.rounds },
  ],
  run,
};
export default wan;

if (require.main === module) {
  runAlone(wan);
}
