/**
 * Instant restore at scale (issue 13: "CLONE restore of a 10 GiB thin volume with 64 MiB written: target
 * usable in < 3 s"): a CLONE restore through the coordinator's public API — from the call to a SUCCEEDED
 * job, i.e. the agent cloned the backup's snapshot and the target's agent confirmed it — against the Ceph
 * CLI doing the same on the backup cluster (`rbd clone --rbd-default-clone-format 2 base@snap target`,
 * process start included), alternating who goes first, several rounds, medians side by side and the
 * ratio. The first round also checks that a clone reads as the source at the backup's snapshot (sha256
 * of `rbd export`; minutes at this size, so once).
 *
 *   node dist/test/bench/clone-restore.js [--gib 10] [--written-mib 64] [--rounds 3] [--no-verify]
 */
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { promisify } from "node:util";
import { RestoreMode } from "../../src/gen/rbdbackup/v1/agent";
import type { VolumeRef } from "../../src/gen/rbdbackup/v1/common";
import { backupRequest, deploy, succeeded } from "../helpers/coordinator";
import { labCluster, uniqueName } from "../helpers/lab";
import { MiB, sha, spec, Volumes } from "../helpers/volumes";
import { arg, median } from "./measure";

const execFileP = promisify(execFile);
const gib = Number(arg("gib", "10"));
const writtenMib = Number(arg("written-mib", "64"));
const rounds = Number(arg("rounds", "3"));
const verify = !process.argv.includes("--no-verify");

async function timed(f: () => Promise<unknown>): Promise<number> {
  const t = performance.now();
  await f();
  return (performance.now() - t) / 1000;
}

async function main(): Promise<void> {
  const d = await deploy();
  const vols = new Volumes();
  const c = d.client;
  let backupId = "";
  try {
    // The volume: thin, `writtenMib` writes of 1 MiB at distinct 1 MiB-aligned offsets.
    const image = uniqueName("bench-thin");
    const io = await vols.io("site-a", "rbd");
    await io.imageCreate(image, gib * 1024 * MiB);
    vols.track("site-a", "rbd", image);
    const img = await io.imageOpen(image);
    const slots = new Set<number>();
    while (slots.size < Math.min(writtenMib, gib * 1024)) slots.add(Math.floor(Math.random() * gib * 1024));
    await Promise.all([...slots].map((s) => img.write(randomBytes(MiB), s * MiB)));
    await img.flush();
    await img.close();
    const volume: VolumeRef = { cluster: "site-a", pool: "rbd", namespace: "", image };
    const b = (await succeeded(c, (await c.createBackup(backupRequest(volume))).id, 600_000)).backup;
    if (!b) throw new Error("the backup job reported no backup");
    backupId = b.id;
    const source = verify ? await sha("site-a", spec(volume, b.snapshot)) : "";

    const ours: number[] = [];
    const cli: number[] = [];
    const parent = `backups/${b.baseImage}@${b.snapshot}`;
    for (let r = 0; r < rounds; r++) {
      const order = r % 2 === 0 ? ["ours", "cli"] : ["cli", "ours"];
      for (const who of order) {
        const target: VolumeRef = { cluster: "site-b", pool: "rbd", namespace: "", image: uniqueName("bench-clone") };
        if (who === "ours") {
          ours.push(
            await timed(async () => {
              const job = await c.restoreBackup({ backupId: b.id, target, mode: RestoreMode.RESTORE_MODE_CLONE });
              await succeeded(c, job.id);
            }),
          );
        } else {
          const conf = labCluster("site-b").conf;
          const args = ["-c", conf, "clone", "--rbd-default-clone-format", "2", parent, spec(target)];
          cli.push(await timed(() => execFileP("rbd", args)));
        }
        vols.track("site-b", "rbd", target.image);
        if (verify && r === 0 && (await sha("site-b", spec(target))) !== source) {
          throw new Error(`${who}: the clone ${spec(target)} does not read as the source at the snapshot`);
        }
      }
    }
    const [o, k] = [median(ours), median(cli)];
    console.log(
      `\nCLONE restore of a ${gib} GiB thin volume (${writtenMib} MiB written), seconds to usable (medians of ${rounds} rounds)\n`,
    );
    console.log(
      `${"rbdbackup (API → job SUCCEEDED)".padEnd(36)} ${"rbd clone (CLI)".padStart(16)} ${"ratio".padStart(8)}`,
    );
    console.log(
      `${`${o.toFixed(3)} s`.padEnd(36)} ${`${k.toFixed(3)} s`.padStart(16)} ${`${(o / k).toFixed(2)}x`.padStart(8)}`,
    );
    console.log(`aim: < 3 s — ${o < 3 ? "met" : "NOT met"}${verify ? "; content identical to the source" : ""}`);
    console.log(
      `\nJSON ${JSON.stringify({ bench: "clone-restore", gib, writtenMib, rounds, oursSeconds: ours, cliSeconds: cli, oursMedian: o, cliMedian: k, ratio: o / k })}`,
    );
  } finally {
    // The clones first (vols), then the backup through the API (base image, snapshot, metadata object).
    await vols.cleanup().catch((e) => console.error("cleanup", e)); // the daemons are stopped whatever it says
    if (backupId) {
      // The call's own rejection too (an await inside the argument would skip d.stop()).
      await c
        .deleteBackup({ backupId })
        .then((j) => succeeded(c, j.id))
        .catch((e) => console.error("delete backup", e));
    }
    await d.stop();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
