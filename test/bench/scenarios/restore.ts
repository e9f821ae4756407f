/**
 * restore: an image fully written (`--mib`) is backed up once both ways (ours through the API; the CLI
 * into backups/<copy>, where import-diff makes the snapshot c1), then restored to a new volume on site-a:
 * RestoreBackup (mode NEW) against `rbd create` + `rbd export-diff backups/<copy>@c1 - | rbd import-diff -
 * rbd/<new>`. Here site-b's agent is the source and site-a's the destination.
 */
import { BackupMode } from "../../../src/gen/rbdbackup/v1/agent";
import { rbd, uniqueName } from "../../helpers/lab";
import { cliPipe } from "../ceph-cli";
import { alternate, type CliSample, comparisonRow, type OursSample, timeCli, timeOurs } from "../compare";
import { osdPids } from "../measure";
import { fill, startRig } from "../rig";
import type { Scenario, ScenarioContext } from "./types";

const MiB = 1 << 20;

export const restore: Scenario = {
  name: "restore",
  describe: "restore of a full backup (--mib) to a new volume on site-a, vs the CLI pipe from the CLI's copy",
  // Each round: the volume and both restores on site-a; the CLI's copy and our base image on site-b.
  writes: (ctx) => [
    { site: "site-a", mib: 3 * ctx.mib * ctx.rounds },
    { site: "site-b", mib: 2 * ctx.mib * ctx.rounds },
  ],
  async run(ctx: ScenarioContext) {
    const rig = await startRig(ctx);
    const samples: { cli: CliSample[]; ours: OursSample[] } = { cli: [], ours: [] };
    const procs = {
      source: rig.agents["site-b"].proc.pid as number,
      destination: rig.agents["site-a"].proc.pid as number,
      osds: osdPids(ctx.labDir, ["site-a", "site-b"]),
    };
    try {
      for (let round = 0; round < ctx.rounds; round++) {
        const vol = uniqueName("bench-rsrc");
        const cliCopy = uniqueName("bench-cli");
        const cliRestore = uniqueName("bench-rcli");
        const ourRestore = uniqueName("bench-rours");
        const backups: string[] = [];
        try {
          await rig.volumes.imageCreate(vol, ctx.mib * MiB);
          await fill(rig.volumes, vol, ctx.mib * MiB);
          await rig.backups.imageCreate(cliCopy, ctx.mib * MiB);
          await rbd("site-a", ["snap", "create", `rbd/${vol}@c1`]);
          await cliPipe("site-a", `rbd/${vol}@c1`, null, "site-b", `backups/${cliCopy}`);
          const b = await rig.backup(vol, BackupMode.BACKUP_MODE_FULL);
          backups.push(b.id);
          await alternate(
            round,
            () =>
              timeCli(async () => {
                await rbd("site-a", ["create", "--size", `${ctx.mib}M`, `rbd/${cliRestore}`]);
                return cliPipe("site-b", `backups/${cliCopy}@c1`, null, "site-a", `rbd/${cliRestore}`);
              }),
            () => timeOurs(procs, async () => (await rig.restoreNew(b.id, ourRestore)).dataBytesSent),
            samples,
          );
        } finally {
          for (const id of backups) await rig.deleteBackup(id);
          await rig.removeImages([
            ["site-a", `rbd/${vol}`],
            ["site-a", `rbd/${cliRestore}`],
            ["site-a", `rbd/${ourRestore}`],
            ["site-b", `backups/${cliCopy}`],
          ]);
        }
        ctx.log(`restore: round ${round + 1}/${ctx.rounds} done`);
      }
    } finally {
      await rig.stop();
    }
    return [comparisonRow(`restore ${ctx.mib} MiB to site-a`, ctx.mib * MiB, samples)];
  },
};
