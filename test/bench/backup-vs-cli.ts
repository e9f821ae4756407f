/**
 * rbdbackup against the Ceph CLI doing the same work (what the Cinder driver runs), same clusters,
 * same run, alternating:
 *   full:        rbd snap create rbd/img@c1; rbd export-diff rbd/img@c1 - | rbd import-diff - backups/target
 *   incremental: rbd snap create rbd/img@c2; the same pipe with --from-snap c1, after scattered
 *                4 KiB–1 MiB writes touching ~2% of the image
 * (import-diff creates the snapshot on the destination, as our destination agent does)
 * versus a backup through the agents (site-a agent → site-b agent, mutual TLS). Also prints the
 * destination's raw write bandwidth (rbd bench) as the physical limit. Wall times include process
 * start for the CLI and the whole gRPC call for rbdbackup.
 *
 *   node dist/test/bench/backup-vs-cli.js [--mib 1024] [--rounds 3]
 */
import { execFile } from "node:child_process";
import { randomBytes, randomUUID } from "node:crypto";
import { promisify } from "node:util";
import { BackupMode } from "../../src/gen/rbdbackup/v1/agent";
import { startAgent } from "../helpers/agents";
import { connectLab, labCluster, uniqueName } from "../helpers/lab";
import { cliPipe, rawWriteMiBps } from "./ceph-cli";
import { arg, limitsArg, median } from "./measure";

const execFileP = promisify(execFile);
const MiB = 1 << 20;

const mib = Number(arg("mib", "1024"));
const rounds = Number(arg("rounds", "3"));
/** --insecure: agents talk plaintext gRPC (to show what TLS costs); default mutual TLS. */
const insecure = process.argv.includes("--insecure");
const limits = limitsArg();

async function timed<T>(f: () => Promise<T>): Promise<[number, T]> {
  const t = process.hrtime.bigint();
  const r = await f();
  return [Number(process.hrtime.bigint() - t) / 1e9, r];
}

async function main(): Promise<void> {
  const a = labCluster("site-a");
  const [agentA, agentB] = await Promise.all([
    startAgent("site-a", { insecure, limits }),
    startAgent("site-b", { insecure, limits }),
  ]);
  const ca = await connectLab("site-a");
  const cb = await connectLab("site-b");
  const ioA = await ca.openIoCtx("rbd");
  const ioB = await cb.openIoCtx("backups");
  const rows: Array<{ scenario: string; cli: number[]; ours: number[]; bytes: number }> = [
    { scenario: `full ${mib} MiB random data`, cli: [], ours: [], bytes: mib * MiB },
    { scenario: `incremental ~2% of ${mib} MiB changed`, cli: [], ours: [], bytes: 0 },
  ];
  const wire: number[] = [];
  try {
    for (let r = 0; r < rounds; r++) {
      // A fresh volume per round: fully written with random data.
      const vol = uniqueName("bench-vol");
      await ioA.imageCreate(vol, mib * MiB);
      const img = await ioA.imageOpen(vol);
      const buf = randomBytes(4 * MiB);
      for (let off = 0; off < mib * MiB; off += 64 * MiB) {
        await Promise.all(
          Array.from({ length: 16 }, (_, i) => (off + i * 4 * MiB < mib * MiB ? img.write(buf, off + i * 4 * MiB) : 0)),
        );
      }
      const cliTarget = uniqueName("bench-cli");
      await ioB.imageCreate(cliTarget, mib * MiB);
      const order = r % 2 === 0 ? ["cli", "ours"] : ["ours", "cli"];
      // One round of a scenario: the CLI snapshots and pipes; rbdbackup runs one backup call.
      const cli = (snap: string, from: string | null) =>
        timed(async () => {
          await execFileP("rbd", ["-c", a.conf, "snap", "create", `rbd/${vol}@${snap}`]);
          await cliPipe("site-a", `rbd/${vol}@${snap}`, from, "site-b", `backups/${cliTarget}`);
        });
      const ours = (mode: BackupMode) =>
        timed(() =>
          agentA.client.backup({
            backupId: randomUUID(),
            source: { $case: "volume", value: { pool: "rbd", namespace: "", image: vol } },
            destination: { address: agentB.transferAddress, clusterFsid: "" },
            destinationPool: "backups",
            mode,
            keepSnapshots: ["c1", "c2"],
          }),
        );
      let ourBase = "";
      for (const who of order) {
        if (who === "cli") rows[0]?.cli.push((await cli("c1", null))[0]);
        else {
          const [t, res] = await ours(BackupMode.BACKUP_MODE_FULL);
          rows[0]?.ours.push(t);
          ourBase = res.baseImage;
        }
      }
      // ~2% changed in scattered 4 KiB–1 MiB writes.
      let changed = 0;
      const writes: Promise<number>[] = [];
      while (changed < mib * MiB * 0.02) {
        const len = 4096 + Math.floor(Math.random() * (MiB - 4096));
        changed += len;
        writes.push(img.write(randomBytes(len), Math.floor(Math.random() * (mib * MiB - len))));
      }
      await Promise.all(writes);
      (rows[1] as { bytes: number }).bytes = changed;
      for (const who of order) {
        if (who === "cli") rows[1]?.cli.push((await cli("c2", "c1"))[0]);
        else {
          const [t, res] = await ours(BackupMode.BACKUP_MODE_AUTO);
          if (!res.incremental) throw new Error(`expected an incremental: ${res.forcedFullReason}`);
          rows[1]?.ours.push(t);
          wire.push(res.dataBytesSent);
        }
      }
      // Free the RAM the round used.
      await img.close();
      await execFileP("rbd", ["-c", a.conf, "snap", "purge", `rbd/${vol}`]);
      await ioA.imageRemove(vol);
      for (const n of [cliTarget, ourBase]) {
        await execFileP("rbd", ["-c", labCluster("site-b").conf, "snap", "purge", `backups/${n}`]);
        await ioB.imageRemove(n);
      }
      for (const o of await ioB.objList()) if (o.startsWith("backup.") && o.endsWith(".meta")) await ioB.objRemove(o);
    }
    // The destination's raw write bandwidth, for reference.
    const rawMiBps = await rawWriteMiBps("site-b", ioB, mib);

    console.log(
      `\nbackup site-a → site-b: rbdbackup (${insecure ? "plaintext gRPC" : "mutual TLS"}) vs rbd export-diff | rbd import-diff (medians of ${rounds} rounds)\n`,
    );
    console.log(
      `${"scenario".padEnd(40)} ${"CLI pipe".padStart(10)} ${"rbdbackup".padStart(10)} ${"speed-up".padStart(9)} ${"MiB/s ours".padStart(11)}`,
    );
    const out = rows.map((row) => ({
      scenario: row.scenario,
      cliSeconds: Number(median(row.cli).toFixed(3)),
      oursSeconds: Number(median(row.ours).toFixed(3)),
      speedup: Number((median(row.cli) / median(row.ours)).toFixed(2)),
      oursMiBps: Number((row.bytes / MiB / median(row.ours)).toFixed(1)),
    }));
    for (const o of out) {
      console.log(
        `${o.scenario.padEnd(40)} ${`${o.cliSeconds}s`.padStart(10)} ${`${o.oursSeconds}s`.padStart(10)} ${`${o.speedup}x`.padStart(9)} ${String(o.oursMiBps).padStart(11)}`,
      );
    }
    console.log(`\ndestination raw write (rbd bench, 4 MiB, 16 threads): ${rawMiBps.toFixed(1)} MiB/s`);
    console.log(
      `incremental: ${((rows[1]?.bytes ?? 0) / MiB).toFixed(1)} MiB changed, ${(median(wire) / MiB).toFixed(1)} MiB of data on the wire (median)`,
    );
    console.log(
      `\nJSON ${JSON.stringify({ bench: "backup-vs-cli", mib, rounds, tls: !insecure, limits, results: out, rawWriteMiBps: rawMiBps, incrementalChangedBytes: rows[1]?.bytes, incrementalWireBytes: median(wire) })}`,
    );
  } finally {
    await ioA.close();
    await ioB.close();
    await ca.close();
    await cb.close();
    await Promise.all([agentA.stop(), agentB.stop()]);
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
