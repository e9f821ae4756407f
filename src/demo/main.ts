/**
 * The README's main job (run by deploy/demo.sh once the lab clusters are up): a coordinator and two
 * agents (one per lab cluster) that connect to it, all with mutual TLS; everything below goes through
 * the coordinator's public API (BackupService) like a control plane would: a volume with real data on site-a; a full backup to site-b; changes; an
 * incremental backup; a restore of the incremental to a new volume on site-b; a byte-for-byte check
 * (sha256 of `rbd export` of the source snapshot and of the restored volume); a short summary.
 * Cleans up what it created unless --keep is given, so it can run again and again. The daemons listen
 * on fixed loopback ports (DEMO_PORTS), so a restarted coordinator is where its agents dial; a port
 * another process holds stops the demo at once, naming it.
 */
import { execFile, spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import path from "node:path";
import { promisify } from "node:util";
import { connect } from "../../agents/ceph";
import { BackupMode, RestoreMode } from "../gen/rbdbackup/v1/agent";
import { type Backup, type Job, JobState } from "../gen/rbdbackup/v1/backup_service";
import { labClusterInfo, labDir, labTls, startAgentProcess } from "../lab/agent-process";
import { apiClient, startCoordinatorProcess } from "../lab/coordinator-process";

const execFileP = promisify(execFile);
const MiB = 1 << 20;
const keep = process.argv.includes("--keep");

function exportSha(cluster: string, spec: string): Promise<string> {
  const c = labClusterInfo(cluster);
  return new Promise((resolve, reject) => {
    const p = spawn("rbd", ["-c", c.conf, "export", "--no-progress", spec, "-"], { stdio: ["ignore", "pipe", "pipe"] });
    const h = createHash("sha256");
    p.stdout.on("data", (d: Buffer) => h.update(d));
    p.on("error", reject);
    p.on("exit", (code) =>
      code === 0 ? resolve(h.digest("hex")) : reject(new Error(`rbd export ${spec} exited ${code}`)),
    );
  });
}

/**
 * Fixed loopback ports (the config defaults; site-b's agent next to site-a's): a demo run after a
 * restart binds the same ones, so agents and the CLI keep reaching what they dialled before.
 */
const DEMO_PORTS = {
  coordinator: "127.0.0.1:7300",
  coordinatorMetrics: "127.0.0.1:9730",
  "site-a": { listen: "127.0.0.1:7400", transferListen: "127.0.0.1:7401" },
  "site-b": { listen: "127.0.0.1:7410", transferListen: "127.0.0.1:7411" },
} as const;

/** Throws, naming the port and what to do, when one of the demo's ports is taken. */
async function requireFreePorts(addresses: string[]): Promise<void> {
  for (const a of addresses) {
    const i = a.lastIndexOf(":");
    const host = a.slice(0, i);
    const port = Number(a.slice(i + 1));
    await new Promise<void>((resolve, reject) => {
      const srv = createServer();
      srv.once("error", (e: NodeJS.ErrnoException) =>
        reject(
          new Error(
            e.code === "EADDRINUSE"
              ? `port ${port} on ${host} is in use by another process; the demo needs it (${a}). See who holds it with \`ss -ltnp 'sport = :${port}'\` and stop it`
              : `cannot bind ${a}: ${e.message}`,
          ),
        ),
      );
      srv.listen({ host, port, exclusive: true }, () => srv.close(() => resolve()));
    });
  }
}

const fmtMiB = (n: number) => `${(n / MiB).toFixed(1)} MiB`;
const rate = (bytes: number, secs: number) => `${(bytes / MiB / Math.max(secs, 1e-3)).toFixed(0)} MiB/s`;

async function main(): Promise<void> {
  const t0 = Date.now();
  const siteA = labClusterInfo("site-a");
  console.log("rbdbackup demo");
  console.log(
    `  clusters: site-a (fsid ${siteA.fsid}), site-b (fsid ${labClusterInfo("site-b").fsid}) — lab, loopback`,
  );
  // The daemons stay up after the demo (metrics, the CLI); a new run replaces the previous run's.
  const demoDir = path.join(labDir, "demo");
  await stopPreviousDaemons(demoDir);
  await requireFreePorts([
    DEMO_PORTS.coordinator,
    DEMO_PORTS.coordinatorMetrics,
    ...(["site-a", "site-b"] as const).flatMap((c) => [DEMO_PORTS[c].listen, DEMO_PORTS[c].transferListen]),
  ]);
  mkdirSync(demoDir, { recursive: true });
  const pids: number[] = [];
  let failed = true;
  try {
    // The coordinator first (its catalog in $LAB_DIR/demo/coordinator), then one agent per cluster that
    // dials it; everything talks mutual TLS with the lab's CA.
    const coord = await startCoordinatorProcess({
      dir: path.join(demoDir, "coordinator"),
      logFile: path.join(demoDir, "coordinator.log"),
      listen: DEMO_PORTS.coordinator,
      metricsListen: DEMO_PORTS.coordinatorMetrics,
    });
    pids.push(coord.proc.pid as number);
    writeFileSync(path.join(demoDir, "pids"), `${pids.join("\n")}\n`);
    const agent = async (cluster: "site-a" | "site-b") => {
      const stateDir = path.join(demoDir, `agent-${cluster}`);
      mkdirSync(stateDir, { recursive: true });
      const p = await startAgentProcess(cluster, {
        clientCert: "operator",
        coordinator: coord.address,
        ...DEMO_PORTS[cluster],
        stateDir,
        logFile: path.join(demoDir, `agent-${cluster}.log`),
      });
      pids.push(p.proc.pid as number);
      writeFileSync(path.join(demoDir, "pids"), `${pids.join("\n")}\n`);
      return p;
    };
    const [a, b] = await Promise.all([agent("site-a"), agent("site-b")]);
    const { client: api } = apiClient(coord.address, labTls("operator"));
    for (let i = 0; (await api.listAgents({})).agents.filter((x) => x.connected).length < 2; i++) {
      if (i > 300) throw new Error("the agents did not connect to the coordinator within 30 s");
      await new Promise((r) => setTimeout(r, 100));
    }
    console.log(`  coordinator: ${coord.address} (BackupService; mutual TLS)`);
    console.log(`  agents:      site-a at ${a.address}, site-b at ${b.address}, connected to the coordinator`);

    // A 256 MiB volume with 64 MiB of random data, scattered.
    const cluster = await connect({ conf: siteA.conf, clientId: "admin", keyring: siteA.keyring });
    const io = await cluster.openIoCtx("rbd");
    const volume = `demo-${Date.now().toString(36)}`;
    await io.imageCreate(volume, 256 * MiB);
    const img = await io.imageOpen(volume);
    await Promise.all(Array.from({ length: 32 }, (_, i) => img.write(randomBytes(2 * MiB), i * 8 * MiB + 4096 * i)));
    await img.flush();
    console.log(`\nvolume site-a/rbd/${volume}: 256 MiB, 64 MiB of random data`);

    /** Follows a job through WatchJob to its end; throws when it did not succeed. */
    const follow = async (jobId: string): Promise<Job> => {
      let last: Job | undefined;
      for await (const e of api.watchJob({ jobId })) last = e.job;
      if (!last || last.state !== JobState.JOB_STATE_SUCCEEDED)
        throw new Error(`job ${jobId} ended ${last ? JobState[last.state] : "?"}: ${last?.errorMessage}`);
      return last;
    };
    const backup = async (label: string): Promise<Backup> => {
      const t = Date.now();
      const job = await api.createBackup({
        volume: { cluster: "site-a", pool: "rbd", namespace: "", image: volume },
        location: { cluster: "site-b", pool: "backups", namespace: "" },
        mode: BackupMode.BACKUP_MODE_AUTO,
        volumeId: volume,
        volumeMetadata: { origin: "rbdbackup demo" },
        idempotencyKey: "",
        maxSnapshots: 0,
      });
      const r = (await follow(job.id)).backup as Backup;
      const secs = (Date.now() - t) / 1000;
      console.log(
        `${label.padEnd(12)} ${r.incremental ? "incremental" : "full"} → site-b backups/${r.baseImage} (backup ${r.id})\n` +
          `             ${fmtMiB(r.dataBytesSent)} sent, ${fmtMiB(r.zeroBytes)} as zero ranges (not on the wire); ` +
          `transfer ${r.transferSeconds.toFixed(2)} s (${rate(r.dataBytesSent, r.transferSeconds)}), job ${secs.toFixed(2)} s` +
          (r.forcedFullReason ? `\n             full because: ${r.forcedFullReason}` : ""),
      );
      return r;
    };
    const full = await backup("backup 1");

    // Change 8 MiB in 64 scattered writes, discard 4 MiB.
    await Promise.all(
      Array.from({ length: 64 }, (_, i) => img.write(randomBytes(128 * 1024), (i * 3 + 1) * MiB + 777)),
    );
    await img.discard(200 * MiB, 4 * MiB);
    await img.flush();
    await img.close();
    console.log("\nchanged 8 MiB (64 writes) and discarded 4 MiB");
    const incr = await backup("backup 2");

    const target = { cluster: "site-b", pool: "rbd", namespace: "", image: `${volume}-restored` };
    const t = Date.now();
    const rj = await follow(
      (await api.restoreBackup({ backupId: incr.id, target, mode: RestoreMode.RESTORE_MODE_NEW, idempotencyKey: "" }))
        .id,
    );
    const rr = rj.restore;
    console.log(
      `\nrestore      backup 2 → new volume site-b/rbd/${target.image}\n` +
        `             ${fmtMiB(rr?.dataBytesSent ?? 0)} written, transfer ${(rr?.seconds ?? 0).toFixed(2)} s (${rate(rr?.dataBytesSent ?? 0, rr?.seconds ?? 0)}), job ${((Date.now() - t) / 1000).toFixed(2)} s`,
    );
    const [src, dst] = await Promise.all([
      exportSha("site-a", `rbd/${volume}@${incr.snapshot}`),
      exportSha("site-b", `rbd/${target.image}`),
    ]);
    const ok = src === dst;
    console.log(
      `\nverify       sha256 of rbd export: source snapshot ${src.slice(0, 16)}…, restored ${dst.slice(0, 16)}…  ${ok ? "IDENTICAL" : "DIFFERENT"}`,
    );

    if (!keep) {
      for (const bk of [incr, full]) await follow((await api.deleteBackup({ backupId: bk.id, idempotencyKey: "" })).id);
      const cb = labClusterInfo("site-b");
      await execFileP("rbd", ["-c", cb.conf, "rm", "--no-progress", `rbd/${target.image}`]);
      await execFileP("rbd", ["-c", siteA.conf, "snap", "purge", "--no-progress", `rbd/${volume}`]);
      await io.imageRemove(volume);
    }
    await io.close();
    await cluster.close();
    console.log(
      `\nsummary: full ${fmtMiB(full.dataBytesSent)} + incremental ${fmtMiB(incr.dataBytesSent)} sent; restore ${ok ? "verified byte for byte" : "FAILED verification"}; total ${((Date.now() - t0) / 1000).toFixed(1)} s`,
    );
    console.log(
      keep
        ? "kept: the volume, both backups and the restored volume"
        : "cleaned up: volume, backups (deleted through the API) and restored volume removed (--keep to keep them)",
    );
    const tls = labTls("operator");
    console.log(`
still running (logs in ${demoDir}/*.log):
  coordinator ${coord.address}   metrics http://${coord.metricsAddress}/metrics
  agent site-a ${a.address}   metrics http://${a.metricsAddress}/metrics
  agent site-b ${b.address}   metrics http://${b.metricsAddress}/metrics
try the CLI:
  export RBDBACKUP_COORDINATOR=${coord.address} RBDBACKUP_TLS_CA=${tls.ca} RBDBACKUP_TLS_CERT=${tls.cert} RBDBACKUP_TLS_KEY=${tls.key}
  node dist/src/cli/main.js backup list --status deleted ; node dist/src/cli/main.js job list ; node dist/src/cli/main.js agent list
stop everything (daemons and lab clusters): npm run lab -- down`);
    failed = !ok;
  } finally {
    if (failed && process.exitCode === undefined) process.exitCode = 1;
  }
}

/** Stops the daemons a previous demo run left running (pids checked against their command line). */
async function stopPreviousDaemons(dir: string): Promise<void> {
  let pids: number[] = [];
  try {
    pids = readFileSync(path.join(dir, "pids"), "utf8").split("\n").filter(Boolean).map(Number);
  } catch {
    return;
  }
  for (const pid of pids) {
    try {
      if (!readFileSync(`/proc/${pid}/cmdline`, "utf8").includes("dist/")) continue;
      process.kill(pid, "SIGTERM");
    } catch {
      continue;
    }
    for (let i = 0; i < 300; i++) {
      try {
        process.kill(pid, 0);
      } catch {
        break;
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  rmSync(path.join(dir, "pids"), { force: true });
}

main().then(
  // The daemons are detached; the API and agent channels would keep this process alive.
  () => process.exit(),
  (e) => {
    console.error(`demo failed: ${e instanceof Error ? e.message : e}`);
    console.error(`logs: ${path.join(labDir, "demo")}/*.log; stop everything: npm run lab -- down`);
    process.exit(1);
  },
);
