/**
 * The README's main job (run by deploy/demo.sh once the lab clusters are up): two agents with mutual
 * TLS, one per lab cluster; a volume with real data on site-a; a full backup to site-b; changes; an
 * incremental backup; a restore of the incremental to a new volume on site-b; a byte-for-byte check
 * (sha256 of `rbd export` of the source snapshot and of the restored volume); a short summary.
 * Cleans up what it created unless --keep is given, so it can run again and again.
 */
import { execFile, spawn } from "node:child_process";
import { createHash, randomBytes, randomUUID } from "node:crypto";
import { promisify } from "node:util";
import { connect } from "../../agents/ceph";
import { type BackupResult, RestoreMode } from "../gen/rbdbackup/v1/agent";
import { type AgentProcess, labClusterInfo, startAgentProcess } from "../lab/agent-process";

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

const fmtMiB = (n: number) => `${(n / MiB).toFixed(1)} MiB`;
const rate = (bytes: number, secs: number) => `${(bytes / MiB / Math.max(secs, 1e-3)).toFixed(0)} MiB/s`;

async function main(): Promise<void> {
  const t0 = Date.now();
  const siteA = labClusterInfo("site-a");
  console.log("rbdbackup demo");
  console.log(
    `  clusters: site-a (fsid ${siteA.fsid}), site-b (fsid ${labClusterInfo("site-b").fsid}) — lab, loopback`,
  );
  const agents: AgentProcess[] = [];
  try {
    const [a, b] = await Promise.all([
      startAgentProcess("site-a", { clientCert: "operator" }),
      startAgentProcess("site-b", { clientCert: "operator" }),
    ]);
    agents.push(a, b);
    console.log(`  agents:   site-a at ${a.address}, site-b at ${b.address} (mutual TLS)`);

    // A 256 MiB volume with 64 MiB of random data, scattered.
    const cluster = await connect({ conf: siteA.conf, clientId: "admin", keyring: siteA.keyring });
    const io = await cluster.openIoCtx("rbd");
    const volume = `demo-${Date.now().toString(36)}`;
    await io.imageCreate(volume, 256 * MiB);
    const img = await io.imageOpen(volume);
    await Promise.all(Array.from({ length: 32 }, (_, i) => img.write(randomBytes(2 * MiB), i * 8 * MiB + 4096 * i)));
    await img.flush();
    console.log(`\nvolume rbd/${volume} on site-a: 256 MiB, 64 MiB of random data`);

    const vol = { pool: "rbd", namespace: "", image: volume };
    const backup = async (label: string): Promise<BackupResult> => {
      const r = await a.client.backup({
        backupId: randomUUID(),
        source: { $case: "volume", value: vol },
        destination: { address: b.address, clusterFsid: b.fsid },
        destinationPool: "backups",
        volumeId: volume,
        volumeMetadata: { origin: "rbdbackup demo" },
      });
      console.log(
        `${label.padEnd(12)} ${r.incremental ? "incremental" : "full"} → site-b backups/${r.baseImage}\n` +
          `             ${fmtMiB(r.dataBytesSent)} sent, ${fmtMiB(r.zeroBytes)} as zero ranges (not on the wire), ` +
          `${r.seconds.toFixed(2)} s, ${rate(r.dataBytesSent, r.seconds)}` +
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

    const target = { pool: "rbd", namespace: "", image: `${volume}-restored` };
    const rr = await b.client.restore({
      backupId: incr.backupId,
      backupPool: "backups",
      targetAgent: { address: "", clusterFsid: "" },
      target,
      mode: RestoreMode.RESTORE_MODE_NEW,
    });
    console.log(
      `\nrestore      backup 2 → new volume site-b rbd/${target.image}\n` +
        `             ${fmtMiB(rr.dataBytesSent)} written, ${rr.seconds.toFixed(2)} s, ${rate(rr.dataBytesSent, rr.seconds)}`,
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
      await b.client.deleteBackup({ backupId: incr.backupId, pool: "backups" });
      await b.client.deleteBackup({ backupId: full.backupId, pool: "backups" });
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
        : "cleaned up: volume, backups and restored volume removed (--keep to keep them)",
    );
    console.log("stop the lab clusters with: npm run lab -- down");
    if (!ok) process.exitCode = 1;
  } finally {
    await Promise.all(agents.map((x) => x.stop()));
  }
}

main().catch((e) => {
  console.error(`demo failed: ${e instanceof Error ? e.message : e}`);
  process.exit(1);
});
