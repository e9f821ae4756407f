/**
 * full: an image fully written with random data (`--mib`, default 1 GiB), backed up site-a → site-b — a
 * FULL backup through the API against `rbd snap create` + `rbd export-diff … - | rbd import-diff - …` into
 * a new image of the backups pool. Also the engine of small.ts (the same at 64 MiB).
 */
import { BackupMode } from "../../../src/gen/rbdbackup/v1/agent";
import { rbd, uniqueName } from "../../helpers/lab";
import { cliPipe } from "../ceph-cli";
import { alternate, type CliSample, comparisonRow, type OursSample, timeCli, timeOurs } from "../compare";
import type { SiteWrite } from "../lab-room";
import { osdPids } from "../measure";
import { fill, startRig } from "../rig";
import type { Row, Scenario, ScenarioContext } from "./types";

const MiB = 1 << 20;

/** What fullBackupRow writes: each round's volume on site-a; the CLI's copy and our base image on site-b. */
export function fullBackupWrites(ctx: ScenarioContext, sizeMiB: number): SiteWrite[] {
  return [
    { site: "site-a", mib: sizeMiB * ctx.rounds },
    { site: "site-b", mib: 2 * sizeMiB * ctx.rounds },
  ];
}

/** Full backup of a `sizeMiB` image fully written, ours vs the CLI, `ctx.rounds` rounds. */
export async function fullBackupRow(ctx: ScenarioContext, label: string, sizeMiB: number): Promise<Row> {
  const rig = await startRig(ctx);
  const samples: { cli: CliSample[]; ours: OursSample[] } = { cli: [], ours: [] };
  const procs = {
    source: rig.agents["site-a"].proc.pid as number,
    destination: rig.agents["site-b"].proc.pid as number,
    osds: osdPids(ctx.labDir, ["site-a", "site-b"]),
  };
  try {
    for (let round = 0; round < ctx.rounds; round++) {
      const vol = uniqueName("bench-full");
      const cliCopy = uniqueName("bench-cli");
      const backups: string[] = [];
      try {
        await rig.volumes.imageCreate(vol, sizeMiB * MiB);
        await fill(rig.volumes, vol, sizeMiB * MiB);
        await rig.backups.imageCreate(cliCopy, sizeMiB * MiB);
        await alternate(
          round,
          () =>
            timeCli(async () => {
              await rbd("site-a", ["snap", "create", `rbd/${vol}@c1`]);
              return cliPipe("site-a", `rbd/${vol}@c1`, null, "site-b", `backups/${cliCopy}`);
            }),
          () =>
            timeOurs(procs, async () => {
              const b = await rig.backup(vol, BackupMode.BACKUP_MODE_FULL);
              backups.push(b.id);
              return b.dataBytesSent;
            }),
          samples,
        );
      } finally {
        for (const id of backups) await rig.deleteBackup(id);
        await rig.removeImages([
          ["site-a", `rbd/${vol}`],
          ["site-b", `backups/${cliCopy}`],
        ]);
      }
      ctx.log(`${label}: round ${round + 1}/${ctx.rounds} done`);
    }
  } finally {
    await rig.stop();
  }
  return comparisonRow(label, sizeMiB * MiB, samples);
}

export const full: Scenario = {
  name: "full",
  describe: "full backup of an image fully written with random data (--mib), site-a → site-b, vs the CLI pipe",
  run: async (ctx) => [await fullBackupRow(ctx, `full ${ctx.mib} MiB random`, ctx.mib)],
  writes: (ctx) => fullBackupWrites(ctx, ctx.mib),
};
