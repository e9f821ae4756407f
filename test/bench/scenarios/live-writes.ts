/**
 * Scenario "live-writes": an incremental of a volume that `rbd bench --io-type write --io-size 4K
 * --io-pattern rand` writes to, next to the same incremental once the writer stopped (idle) — ours
 * through the API and the CLI (`rbd snap create` + `rbd export-diff --from-snap | rbd import-diff`) under
 * the same writer, alternating who goes first. The writer is a separate rbd process (it owns the
 * image's exclusive lock); it is bounded by `--io-total`, sized from a calibration run to outlast both
 * incrementals, so it always ends cleanly (a killed librbd client would leave its lock and watch behind).
 * The note says whether the exclusive lock left the writer during our incremental, and the MiB each
 * side moved (the writer's changes since the previous snapshot of each).
 */
import type { ChildProcess } from "node:child_process";
import { BackupMode } from "../../../src/gen/rbdbackup/v1/agent";
import { connectLab, rbd, uniqueName } from "../../helpers/lab";
import { cliPipe, randomWriter } from "../ceph-cli";
import { inTurn, median } from "../measure";
import {
  backupTimed,
  breakdown,
  cleanUp,
  type Deployment,
  fill,
  groupedNote,
  hygieneSettled,
  MiB,
  settleLogs,
  withDeployment,
} from "./backup-timing";
import type { Row, Scenario, ScenarioContext } from "./types";

/** How long the writer should run per live round, seconds (it must outlast both incrementals). */
const WRITER_SECONDS = 40;
/**
 * The volume's size at most, MiB. 4 KiB random writes touch nearly every 4 MiB object between two
 * snapshots, so each incremental's snapshot on a destination (ours kept as backups, the CLI's on its
 * target) holds a copy of almost the whole volume: at 1 GiB the ~10 snapshots of two rounds filled the
 * bench lab's 16 GiB memstore OSD (2026-12-04, twice), and the scenario waited out the full pool.
 */
const MAX_MIB = 256;

/** `rbd bench` 4 KiB random writes to `spec` (16 threads), `ops` of them; resolves with its elapsed seconds. */
function writer(spec: string, ops: number): { proc: ChildProcess; done: Promise<number> } {
  const proc = randomWriter(spec, ops * 4096);
  const t0 = process.hrtime.bigint();
  const done = new Promise<number>((resolve, reject) => {
    proc.on("exit", (code) =>
      code === 0 ? resolve(Number(process.hrtime.bigint() - t0) / 1e9) : reject(new Error(`rbd bench exited ${code}`)),
    );
  });
  done.catch(() => {});
  return { proc, done };
}

/** Who holds the image's exclusive lock (the locker's client id), "" when nobody does. */
async function lockOwner(spec: string): Promise<string> {
  const out = await rbd("site-a", ["lock", "ls", "--format", "json", spec]).catch(() => "[]");
  const locks = JSON.parse(out || "[]") as Array<{ locker?: string }> | Record<string, { locker?: string }>;
  const list = Array.isArray(locks) ? locks : Object.values(locks);
  return list.map((l) => l.locker ?? "").join(",");
}

/** Bytes of `rbd diff --from-snap from spec@to`. */
async function diffBytes(spec: string, from: string, to: string): Promise<number> {
  const out = await rbd("site-a", ["diff", "--format", "json", "--from-snap", from, `${spec}@${to}`]);
  return (JSON.parse(out) as Array<{ length: number }>).reduce((t, e) => t + e.length, 0);
}

interface Side {
  seconds: number[];
  mib: number[];
}
const side = (): Side => ({ seconds: [], mib: [] });

export const scenario: Scenario = {
  name: "live-writes",
  describe: "incremental of a volume under rbd bench 4 KiB random writes vs idle, ours vs the CLI",
  // The volume, and a snapshot holding a copy of nearly all of it per incremental on each side (MAX_MIB's
  // note): about three per round.
  writes(ctx) {
    const mib = Math.min(ctx.mib, MAX_MIB);
    const rounds = Math.max(2, ctx.rounds);
    return [
      { site: "site-a", mib: mib * (1 + 3 * rounds) },
      { site: "site-b", mib: mib * (2 + 3 * rounds) },
    ];
  },
  async run(ctx: ScenarioContext): Promise<Row[]> {
    return withDeployment(ctx, (d) => liveWrites(ctx, d));
  },
};

async function liveWrites(ctx: ScenarioContext, d: Deployment): Promise<Row[]> {
  const ca = await connectLab("site-a");
  const cb = await connectLab("site-b");
  const ioA = await ca.openIoCtx("rbd");
  const ioB = await cb.openIoCtx("backups");
  const mib = Math.min(ctx.mib, MAX_MIB);
  const size = mib * MiB;
  const vol = uniqueName("bench-live");
  const spec = `rbd/${vol}`;
  const cliTarget = uniqueName("bench-livecli");
  const ids: string[] = [];
  const res = { idleOurs: side(), idleCli: side(), liveOurs: side(), liveCli: side() };
  const phases: Array<Record<string, number>> = [];
  const lockMoves: string[] = [];
  /** Seconds after each of ours until the coordinator's hygiene had removed the parent snapshot. */
  const hygieneIdle: number[] = [];
  const hygieneLive: number[] = [];
  let prev = "c0";
  let n = 1;
  try {
    await ioA.imageCreate(vol, size);
    await fill(ioA, vol, size);
    await ioB.imageCreate(cliTarget, size);
    await rbd("site-a", ["snap", "create", `${spec}@c0`]);
    await cliPipe("site-a", `${spec}@c0`, null, "site-b", `backups/${cliTarget}`);
    await backupTimed(d.api, vol, BackupMode.BACKUP_MODE_FULL, ids);
    // Calibration: the writer's rate on this box now.
    const cal = writer(spec, 4096);
    const rate = 4096 / (await cal.done);
    ctx.log(`live-writes: rbd bench writes ${rate.toFixed(0)} 4 KiB ops/s here`);

    const ours = async (into: Side, live: boolean) => {
      const before = live ? await lockOwner(spec) : "";
      const r = await backupTimed(d.api, vol, BackupMode.BACKUP_MODE_INCREMENTAL, ids);
      into.seconds.push(r.seconds);
      const b = await d.api.getBackup({ backupId: r.job.backupId });
      into.mib.push(b.dataBytesSent / MiB);
      // Untimed, like the CLI's `snap rm` of its previous snapshot: the hygiene's removal after the job.
      const settled = await hygieneSettled(ioA, vol, r.job.backupId);
      (live ? hygieneLive : hygieneIdle).push(settled);
      if (live) {
        const after = await lockOwner(spec);
        lockMoves.push(before === after ? "kept" : `${before}→${after}`);
        await settleLogs();
        phases.push(breakdown(r, d));
      }
    };
    const cli = async (into: Side) => {
      const snap = `c${n++}`;
      const t = process.hrtime.bigint();
      await rbd("site-a", ["snap", "create", `${spec}@${snap}`]);
      await cliPipe("site-a", `${spec}@${snap}`, prev, "site-b", `backups/${cliTarget}`);
      into.seconds.push(Number(process.hrtime.bigint() - t) / 1e9);
      into.mib.push((await diffBytes(spec, prev, snap)) / MiB);
      await rbd("site-a", ["snap", "rm", `${spec}@${prev}`]);
      prev = snap;
    };
    for (let i = 0; i < Math.max(2, ctx.rounds); i++) {
      // Idle: the changes of a short write burst, with the writer gone.
      await writer(spec, Math.round(rate * 3)).done;
      await inTurn(
        i,
        () => ours(res.idleOurs, false),
        () => cli(res.idleCli),
      );
      // Live: both while the writer runs (it started 3 s before).
      const w = writer(spec, Math.round(rate * WRITER_SECONDS));
      await new Promise((r) => setTimeout(r, 3000));
      await inTurn(
        i,
        () => ours(res.liveOurs, true),
        () => cli(res.liveCli),
      );
      const running = w.proc.exitCode === null;
      await w.done;
      ctx.log(
        `live-writes ${i + 1}: idle ours ${res.idleOurs.seconds.at(-1)?.toFixed(2)} s, cli ${res.idleCli.seconds.at(-1)?.toFixed(2)} s; ` +
          `live ours ${res.liveOurs.seconds.at(-1)?.toFixed(2)} s (${res.liveOurs.mib.at(-1)?.toFixed(1)} MiB), ` +
          `cli ${res.liveCli.seconds.at(-1)?.toFixed(2)} s (${res.liveCli.mib.at(-1)?.toFixed(1)} MiB)` +
          `${running ? "" : " — the writer ended before both finished"}; lock ${lockMoves.at(-1)}`,
      );
    }
  } finally {
    await cleanUp(d.api, ids, [
      ["site-a", spec],
      ["site-b", `backups/${cliTarget}`],
    ]);
    await ioA.close();
    await ioB.close();
    await ca.close();
    await cb.close();
  }
  const perMiB = (s: Side) => s.seconds.map((x, i) => x / Math.max(s.mib[i] ?? 0, 1e-9));
  const row = (label: string, o: Side, c: Side, note: string): Row => ({
    scenario: label,
    cliSeconds: median(c.seconds),
    oursSeconds: median(o.seconds),
    // Seconds per MiB copied: under live writes the two sides copy what the writer changed before each
    // began, which differs (who went first, how long the other took).
    ratio: median(perMiB(c)) / median(perMiB(o)),
    wireMiB: median(o.mib),
    note: `${note}ratio of seconds per MiB copied (medians ${median(perMiB(o)).toFixed(3)} ours, ${median(perMiB(c)).toFixed(3)} CLI); ours ${o.seconds.map((x) => x.toFixed(2)).join("/")} s for ${o.mib.map((x) => x.toFixed(1)).join("/")} MiB; CLI ${c.seconds.map((x) => x.toFixed(2)).join("/")} s for ${c.mib.map((x) => x.toFixed(1)).join("/")} MiB`,
  });
  return [
    row(
      `incremental of ${mib} MiB after 3 s of 4 KiB random writes, idle`,
      res.idleOurs,
      res.idleCli,
      `${hygieneNote(hygieneIdle)}; `,
    ),
    row(
      `incremental of ${mib} MiB under rbd bench 4 KiB random writes`,
      res.liveOurs,
      res.liveCli,
      `exclusive lock during ours: ${lockMoves.join(", ")}; ms p50: ${groupedNote(phases)}; ${hygieneNote(hygieneLive)}; `,
    ),
  ];
}

/** The hygiene's removal of the parent snapshot after each of ours (not part of the job any more). */
function hygieneNote(seconds: number[]): string {
  return `parent snapshot removed by the hygiene ${seconds.map((x) => x.toFixed(2)).join("/")} s after the job (untimed)`;
}
