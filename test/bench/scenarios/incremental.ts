/**
 * Scenario "incremental": a small incremental end to end through the API — ~2% of a 1 GiB image changed
 * in 64 KiB extents (issue 16: ≤ 0.35 s) — and the same change (20 MiB in 64 KiB extents) scattered over
 * a 4 GiB image whose first GiB is written, against the CLI doing the same work on the same clusters in
 * the same run (`rbd snap create` + `rbd export-diff --from-snap | rbd import-diff` into its own copy),
 * alternating who goes first. The row's note is where ours spent its milliseconds (p50 per group; the
 * detailed phases go to the log). One untimed incremental first: sessions, connections and caches warm.
 */
import { BackupMode } from "../../../src/gen/rbdbackup/v1/agent";
import { connectLab, rbd, uniqueName } from "../../helpers/lab";
import { cliPipe } from "../ceph-cli";
import { arg, inTurn, median } from "../measure";
import {
  backupTimed,
  breakdown,
  cleanUp,
  type Deployment,
  detailLines,
  fill,
  GiB,
  groupedNote,
  hygieneSettled,
  MiB,
  scatterExtents,
  settleLogs,
  withDeployment,
} from "./backup-timing";
import type { Row, Scenario, ScenarioContext } from "./types";

const EXTENT = 64 * 1024;

export interface IncrementalRun {
  ours: number[];
  cli: number[];
  phases: Array<Record<string, number>>;
  cpuOurs: Array<[number, number]>;
  /** CPU seconds of `rbd export-diff` and `rbd import-diff`, each run (the snapshot's `rbd snap create` apart). */
  cpuCli: Array<[number, number]>;
  /** Seconds after each of ours until the coordinator's hygiene had removed the parent snapshot (untimed). */
  hygiene: number[];
  changedBytes: number;
  /** Data bytes each of ours sent (Backup.data_bytes_sent): what crossed the wire, measured. */
  sent: number[];
}

/**
 * `runs` incrementals of site-a's `vol` (sizeMiB, first `filledMiB` written), each after `count` extents
 * changed, ours vs the CLI. Exported for incremental-latency.ts.
 */
export async function incrementalRuns(
  ctx: ScenarioContext,
  d: Deployment,
  sizeMiB: number,
  filledMiB: number,
  runs: number,
): Promise<IncrementalRun> {
  const ca = await connectLab("site-a");
  const cb = await connectLab("site-b");
  const ioA = await ca.openIoCtx("rbd");
  const ioB = await cb.openIoCtx("backups");
  const size = sizeMiB * MiB;
  const vol = uniqueName("bench-incr");
  const cliTarget = uniqueName("bench-incrcli");
  // ~2% of 1 GiB whatever the image size: the same change, scattered over more objects.
  const count = Math.round((1024 * MiB * 0.02) / EXTENT);
  const out: IncrementalRun = {
    ours: [],
    cli: [],
    phases: [],
    cpuOurs: [],
    cpuCli: [],
    hygiene: [],
    changedBytes: count * EXTENT,
    sent: [],
  };
  const ids: string[] = [];
  try {
    await ioA.imageCreate(vol, size);
    await fill(ioA, vol, filledMiB * MiB);
    await ioB.imageCreate(cliTarget, size);
    await rbd("site-a", ["snap", "create", `rbd/${vol}@c0`]);
    await cliPipe("site-a", `rbd/${vol}@c0`, null, "site-b", `backups/${cliTarget}`);
    await backupTimed(d.api, vol, BackupMode.BACKUP_MODE_FULL, ids);
    await scatterExtents(ioA, vol, size, count, EXTENT);
    await hygieneSettled(
      ioA,
      vol,
      (await backupTimed(d.api, vol, BackupMode.BACKUP_MODE_INCREMENTAL, ids)).job.backupId,
    );
    await rbd("site-a", ["snap", "create", `rbd/${vol}@c1`]);
    await cliPipe("site-a", `rbd/${vol}@c1`, "c0", "site-b", `backups/${cliTarget}`);
    let prev = "c1";
    for (let i = 0; i < runs; i++) {
      await scatterExtents(ioA, vol, size, count, EXTENT);
      const snap = `c${i + 2}`;
      const runCli = async () => {
        const t = process.hrtime.bigint();
        await rbd("site-a", ["snap", "create", `rbd/${vol}@${snap}`]);
        const cpu = await cliPipe("site-a", `rbd/${vol}@${snap}`, prev, "site-b", `backups/${cliTarget}`);
        out.cli.push(Number(process.hrtime.bigint() - t) / 1e9);
        out.cpuCli.push([cpu.exportSeconds, cpu.importSeconds]);
      };
      const runOurs = async () => {
        const [a0, b0] = d.agentCpu();
        const r = await backupTimed(d.api, vol, BackupMode.BACKUP_MODE_INCREMENTAL, ids);
        const [a1, b1] = d.agentCpu();
        out.ours.push(r.seconds);
        out.cpuOurs.push([a1 - a0, b1 - b0]);
        out.sent.push(Number((await d.api.getBackup({ backupId: r.job.backupId })).dataBytesSent));
        out.hygiene.push(await hygieneSettled(ioA, vol, r.job.backupId));
        await settleLogs();
        out.phases.push(breakdown(r, d));
      };
      await inTurn(i, runCli, runOurs);
      // The CLI keeps one snapshot, as our chain does.
      await rbd("site-a", ["snap", "rm", `rbd/${vol}@${prev}`]);
      prev = snap;
      ctx.log(
        `incremental ${sizeMiB} MiB ${i + 1}/${runs}: ours ${out.ours.at(-1)?.toFixed(3)} s, cli ${out.cli.at(-1)?.toFixed(3)} s` +
          ` · CPU-s agents ${out.cpuOurs
            .at(-1)
            ?.map((x) => x.toFixed(3))
            .join(" + ")}, CLI ${out.cpuCli
            .at(-1)
            ?.map((x) => x.toFixed(3))
            .join(" + ")}`,
      );
    }
  } finally {
    await cleanUp(d.api, ids, [
      ["site-a", `rbd/${vol}`],
      ["site-b", `backups/${cliTarget}`],
    ]);
    await ioA.close();
    await ioB.close();
    await ca.close();
    await cb.close();
  }
  return out;
}

/** The table's row for a set of runs. */
export function incrementalRow(label: string, r: IncrementalRun): Row {
  const o = median(r.ours);
  const c = median(r.cli);
  const gib = r.changedBytes / GiB;
  return {
    scenario: label,
    cliSeconds: c,
    oursSeconds: o,
    ratio: c / o,
    wireMiB: median(r.sent) / MiB,
    cpuPerGiB: {
      sourceAgent: median(r.cpuOurs.map((x) => x[0])) / gib,
      destinationAgent: median(r.cpuOurs.map((x) => x[1])) / gib,
      // Each rbd process of the pipe (bash's `times`: 10 ms ticks, coarse for ~20 MiB).
      cliExport: median(r.cpuCli.map((x) => x[0])) / gib,
      cliImport: median(r.cpuCli.map((x) => x[1])) / gib,
    },
    note: `ms p50: ${groupedNote(r.phases)}; source snapshot removed by the hygiene ${(median(r.hygiene) * 1000).toFixed(0)} ms after the job (p50, untimed, as the CLI's snap rm); ours ${r.ours.map((x) => x.toFixed(2)).join("/")} s, CLI ${r.cli.map((x) => x.toFixed(2)).join("/")} s`,
  };
}

/** The images' sizes, MiB: --mib and 4 GiB (`--incr-sizes 1024`: only the image of --mib). */
const incrementalSizes = (ctx: ScenarioContext) => arg("incr-sizes", `${ctx.mib},4096`).split(",").map(Number);
/** How much of an image is written before the runs: all of --mib's, the first GiB of a larger one. */
const filledMiB = (ctx: ScenarioContext, size: number) => (size === ctx.mib ? size : Math.min(size, 1024));

export const scenario: Scenario = {
  name: "incremental",
  describe: "incremental of ~2% of 1 GiB in 64 KiB extents through the API (and over a 4 GiB image) vs the CLI",
  // Per image: its filled part (site-a; the CLI's copy and our base image on site-b) and each run's 20 MiB
  // change, kept by a snapshot on each side.
  writes(ctx) {
    const runs = Math.max(3, ctx.rounds);
    const filled = incrementalSizes(ctx).reduce((sum, size) => sum + filledMiB(ctx, size), 0);
    const sizes = incrementalSizes(ctx).length;
    return [
      { site: "site-a", mib: filled + 20 * runs * sizes },
      { site: "site-b", mib: 2 * filled + 2 * 20 * runs * sizes },
    ];
  },
  async run(ctx: ScenarioContext): Promise<Row[]> {
    return withDeployment(ctx, async (d) => {
      const rows: Row[] = [];
      const runs = Math.max(3, ctx.rounds);
      for (const size of incrementalSizes(ctx)) {
        const r = await incrementalRuns(ctx, d, size, filledMiB(ctx, size), runs);
        for (const l of detailLines(r.phases)) ctx.log(l);
        rows.push(incrementalRow(`incremental 20 MiB in 64 KiB extents, ${size} MiB image`, r));
      }
      return rows;
    });
  },
};
