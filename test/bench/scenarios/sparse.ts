/**
 * Scenario "sparse": a full backup of a 4 GiB image with 64 MiB written in 256 KiB extents scattered over
 * all of it (issue 16: ≥ 2× the CLI pipe), against `rbd snap create` + `rbd export-diff | rbd import-diff`
 * into an empty image on the other cluster, alternating who goes first; CPU seconds per GiB written of
 * both agents and of the rbd processes; where ours spent its milliseconds in the note.
 */
import { BackupMode } from "../../../src/gen/rbdbackup/v1/agent";
import { connectLab, rbd, uniqueName } from "../../helpers/lab";
import { cliPipe } from "../ceph-cli";
import { inTurn, median, round as r } from "../measure";
import {
  backupTimed,
  breakdown,
  cleanUp,
  detailLines,
  GiB,
  groupedNote,
  MiB,
  scatterExtents,
  settleLogs,
  withDeployment,
} from "./backup-timing";
import type { Row, Scenario, ScenarioContext } from "./types";

const IMAGE_MIB = 4096;
const WRITTEN = 64 * MiB;
const EXTENT = 256 * 1024;

export const scenario: Scenario = {
  name: "sparse",
  describe: "full backup of a 4 GiB image with 64 MiB written (256 KiB extents) vs the CLI pipe",
  // Scattered 256 KiB writes leave objects of ~2 MiB on average (a RADOS object is as long as its last
  // byte written: ~480 MiB of objects), which the CLI's copy writes in full; our base image holds the 64 MiB.
  writes(ctx) {
    const rounds = Math.max(2, ctx.rounds);
    return [
      { site: "site-a", mib: 512 * rounds },
      { site: "site-b", mib: (512 + 64) * rounds },
    ];
  },
  async run(ctx: ScenarioContext): Promise<Row[]> {
    return withDeployment(ctx, async (d) => {
      const ca = await connectLab("site-a");
      const cb = await connectLab("site-b");
      const ioA = await ca.openIoCtx("rbd");
      const ioB = await cb.openIoCtx("backups");
      const ours: number[] = [];
      const sent: number[] = [];
      const cli: number[] = [];
      const cpuOurs: Array<[number, number]> = [];
      const cpuCli: Array<[number, number]> = [];
      const phases: Array<Record<string, number>> = [];
      try {
        for (let i = 0; i < Math.max(2, ctx.rounds); i++) {
          const vol = uniqueName("bench-sparse");
          const target = uniqueName("bench-sparsecli");
          const ids: string[] = [];
          try {
            await ioA.imageCreate(vol, IMAGE_MIB * MiB);
            await scatterExtents(ioA, vol, IMAGE_MIB * MiB, WRITTEN / EXTENT, EXTENT);
            await ioB.imageCreate(target, IMAGE_MIB * MiB);
            const runCli = async () => {
              const t = process.hrtime.bigint();
              await rbd("site-a", ["snap", "create", `rbd/${vol}@c1`]);
              const cpu = await cliPipe("site-a", `rbd/${vol}@c1`, null, "site-b", `backups/${target}`);
              cli.push(Number(process.hrtime.bigint() - t) / 1e9);
              cpuCli.push([cpu.exportSeconds, cpu.importSeconds]);
            };
            const runOurs = async () => {
              const [a0, b0] = d.agentCpu();
              const r = await backupTimed(d.api, vol, BackupMode.BACKUP_MODE_FULL, ids);
              const [a1, b1] = d.agentCpu();
              ours.push(r.seconds);
              sent.push(Number((await d.api.getBackup({ backupId: r.job.backupId })).dataBytesSent));
              cpuOurs.push([a1 - a0, b1 - b0]);
              await settleLogs();
              phases.push(breakdown(r, d));
            };
            await inTurn(i, runCli, runOurs);
            ctx.log(`sparse ${i + 1}: ours ${ours.at(-1)?.toFixed(3)} s, cli ${cli.at(-1)?.toFixed(3)} s`);
          } finally {
            await cleanUp(d.api, ids, [
              ["site-a", `rbd/${vol}`],
              ["site-b", `backups/${target}`],
            ]);
          }
        }
      } finally {
        await ioA.close();
        await ioB.close();
        await ca.close();
        await cb.close();
      }
      for (const l of detailLines(phases)) ctx.log(l);
      const o = median(ours);
      const c = median(cli);
      const gib = WRITTEN / GiB;
      return [
        {
          scenario: "sparse 4 GiB image, 64 MiB written, full backup",
          cliSeconds: r(c, 3),
          oursSeconds: r(o, 3),
          ratio: r(c / o, 2),
          oursMiBps: r(WRITTEN / MiB / o, 1),
          wireMiB: median(sent) / MiB,
          cpuPerGiB: {
            sourceAgent: r(median(cpuOurs.map((x) => x[0])) / gib, 2),
            destinationAgent: r(median(cpuOurs.map((x) => x[1])) / gib, 2),
            cliExport: r(median(cpuCli.map((x) => x[0])) / gib, 2),
            cliImport: r(median(cpuCli.map((x) => x[1])) / gib, 2),
          },
          note: `ms p50: ${groupedNote(phases)}`,
        },
      ];
    });
  },
};
