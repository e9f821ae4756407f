/**
 * Where the CPU of one transfer goes: a full backup of a volume fully written with random data, site-a
 * agent → site-b agent (called directly, no coordinator), `--runs` times; for each run the wall time and
 * throughput, the CPU seconds of the source agent, the destination agent and each lab OSD (from
 * /proc/<pid>/stat), and both agents' peak RSS (VmHWM, reset before the run). Used for the knob sweep
 * behind the agent's defaults (README, Measured). `--bulk auto,off` alternates the agents' transfer.bulk
 * (the bulk channel, or HTTP/2) run by run — fresh agents for each — and prints the medians side by side:
 *
 *   node dist/test/bench/transfer-probe.js [--mib 512] [--runs 2] [--bulk auto,off] [--insecure] [--memory] [--limits '{"chunkSizeBytes":2097152}']
 *   RBDBACKUP_AGENT_NODE_ARGS="--cpu-prof --cpu-prof-dir=/tmp/prof" node dist/test/bench/transfer-probe.js
 */
import { execFileSync } from "node:child_process";
import { randomBytes, randomUUID } from "node:crypto";
import { BackupMode } from "../../src/gen/rbdbackup/v1/agent";
import { startAgent } from "../helpers/agents";
import { scrape } from "../helpers/coordinator";
import { connectLab, labCluster, labDir, uniqueName } from "../helpers/lab";
import { arg, cpuOf, limitsArg, median, procMemMiB, resetPeakRss } from "./measure";
import { parseLogs, settleLogs } from "./scenarios/backup-timing";

const MiB = 1 << 20;
const mib = Number(arg("mib", "512"));
const runs = Number(arg("runs", "2"));
const insecure = process.argv.includes("--insecure");
const limits = limitsArg();
const bulkModes = arg("bulk", "auto").split(",") as Array<"auto" | "off">;
const mem = (pid: number, key: "VmHWM" | "VmRSS") => Math.round(procMemMiB(pid, key));

interface Row {
  mode: string;
  mibps: number;
  source: number;
  destination: number;
  rssSource: number;
  rssDestination: number;
}

function summary(rows: Row[]): void {
  const med = (xs: number[]) => (xs.length ? median(xs) : Number.NaN);
  const gib = mib / 1024;
  console.log(`\ntransfer.bulk side by side, ${mib} MiB full backup, medians of ${runs} alternations:`);
  console.log("bulk   MiB/s   CPU-s/GiB source  destination  both   peak RSS MiB source  destination");
  for (const mode of bulkModes) {
    const l = rows.filter((r) => r.mode === mode);
    const src = med(l.map((r) => r.source / gib));
    const dst = med(l.map((r) => r.destination / gib));
    console.log(
      `${mode.padEnd(5)} ${med(l.map((r) => r.mibps))
        .toFixed(0)
        .padStart(6)}   ${src.toFixed(2).padStart(16)}  ${dst.toFixed(2).padStart(11)}  ${med(
        l.map((r) => (r.source + r.destination) / gib),
      )
        .toFixed(2)
        .padStart(
          5,
        )}   ${String(med(l.map((r) => r.rssSource))).padStart(19)}  ${String(med(l.map((r) => r.rssDestination))).padStart(11)}`,
    );
  }
  console.log(JSON.stringify({ bench: "transfer-probe", mib, runs, limits, rows }));
}

async function main(): Promise<void> {
  const ca = await connectLab("site-a");
  const io = await ca.openIoCtx("rbd");
  const vol = uniqueName("probe");
  try {
    await io.imageCreate(vol, mib * MiB);
    const img = await io.imageOpen(vol);
    for (let off = 0; off < mib * MiB; off += 64 * MiB) {
      await Promise.all(Array.from({ length: 16 }, (_, i) => img.write(randomBytes(4 * MiB), off + i * 4 * MiB)));
    }
    await img.flush();
    await img.close();
    const osds = execFileSync("pgrep", ["-f", `^ceph-osd .*${labDir}`])
      .toString()
      .trim()
      .split("\n")
      .map(Number);
    const rows: Row[] = [];
    for (let r = 0; r < runs; r++) {
      for (const mode of bulkModes) {
        const transfer = { bulk: mode };
        const started = await Promise.allSettled([
          startAgent("site-a", { insecure, limits, transfer }),
          startAgent("site-b", { insecure, limits, transfer }),
        ]);
        const [a, b] = started.map((x) => (x.status === "fulfilled" ? x.value : null));
        if (!a || !b) {
          await Promise.all([a?.stop(), b?.stop()]);
          throw started.find((x) => x.status === "rejected")?.reason;
        }
        try {
          const pids = [a.proc.pid as number, b.proc.pid as number];
          for (const p of pids) resetPeakRss(p);
          const before = [...pids, ...osds].map(cpuOf);
          const t = Date.now();
          const res = await a.client.backup({
            backupId: randomUUID(),
            source: { $case: "volume", value: { pool: "rbd", namespace: "", image: vol } },
            destination: { address: b.transferAddress, clusterFsid: "" },
            destinationPool: "backups",
            mode: BackupMode.BACKUP_MODE_FULL,
          });
          const secs = (Date.now() - t) / 1000;
          // How far the windows grew (they grow only while reads or writes take ≥ 50 ms on average).
          const peakOf = (logs: string, msg: string, key: string) => {
            const line = parseLogs(logs).findLast((l) => l.msg === msg);
            return line?.[key] ?? (line?.writes as Record<string, unknown> | undefined)?.[key];
          };
          // CPU as the reply came (not after the wait for the log lines below).
          const used = [...pids, ...osds].map((p, i) => (cpuOf(p) - (before[i] as number)).toFixed(2));
          await settleLogs(); // the log lines follow the reply
          rows.push({
            mode,
            mibps: mib / secs,
            source: Number(used[0]),
            destination: Number(used[1]),
            rssSource: mem(pids[0] as number, "VmHWM"),
            rssDestination: mem(pids[1] as number, "VmHWM"),
          });
          console.log(
            `bulk ${mode} ${insecure ? "plaintext" : "mTLS"} ${JSON.stringify(limits)} ${mib} MiB in ${secs.toFixed(2)} s = ${(mib / secs).toFixed(0)} MiB/s; ` +
              `CPU s: source ${used[0]}, destination ${used[1]}, OSDs ${used.slice(2).join(" ")}; ` +
              `peak RSS MiB: source ${mem(pids[0] as number, "VmHWM")}, destination ${mem(pids[1] as number, "VmHWM")}; RSS now ${mem(pids[0] as number, "VmRSS")}, ${mem(pids[1] as number, "VmRSS")}; ` +
              `windows at most: ${peakOf(a.logs(), "backup done", "readWindowPeak")} reads, ${peakOf(b.logs(), "transfer committed", "windowPeakMiB")} MiB of writes`,
          );
          if (process.argv.includes("--memory")) {
            // Where each agent's memory is: V8 heap, external (Buffers), resident (from their /metrics).
            for (const [who, ag] of [
              ["source", a],
              ["destination", b],
            ] as const) {
              const text = await scrape(ag.metricsAddress);
              const g = (name: string) =>
                Math.round(Number(new RegExp(`^${name}(?:{[^}]*})? (\\S+)`, "m").exec(text)?.[1]) / 2 ** 20);
              console.log(
                `  ${who}: heap used ${g("nodejs_heap_size_used_bytes")} MiB of ${g("nodejs_heap_size_total_bytes")}, external ${g("nodejs_external_memory_bytes")} MiB, resident ${g("process_resident_memory_bytes")} MiB`,
              );
            }
          }
          await b.client.deleteBackup({ backupId: res.backupId, pool: "backups", baseImage: res.baseImage });
        } finally {
          await Promise.all([a.stop(), b.stop()]);
        }
      }
    }
    summary(rows);
  } finally {
    execFileSync("rbd", ["-c", labCluster("site-a").conf, "snap", "purge", "--no-progress", `rbd/${vol}`]);
    await io.imageRemove(vol).catch(() => {});
    await io.close();
    await ca.close();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
