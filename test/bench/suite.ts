/**
 * The performance suite (issue: beat the Ceph CLI pipe, approach the hardware): rbdbackup — through the
 * coordinator's public API, agents on mutual TLS — against the Ceph CLI doing the same work on the same
 * lab clusters in the same run, alternating who goes first, several rounds, medians and ratios:
 *
 *   full         1 GiB image fully written with random data, site-a → site-b
 *   incremental  after scattered 4 KiB–1 MiB writes touching ~2% of it (and the same change on a 4 GiB
 *                sparse image: time follows changed bytes, not image size)
 *   sparse       4 GiB image with 64 MiB written, full backup (and, for comparison, a 64 MiB image
 *                fully written: the sparse image's time should be close to it)
 *   restore      the incremental backup to a new volume on site-a
 *   raw          `rbd bench --io-type write --io-size 4M` on the destination: the physical limit
 *
 * The CLI is what Cinder runs: `rbd snap create`, then `rbd export-diff [--from-snap] … - | rbd
 * import-diff - …` (restore: `rbd create` + the same pipe from the backup snapshot). Also reported:
 * agents' peak RSS per scenario (VmHWM, reset before each), CPU seconds per GiB moved (agents vs the
 * two rbd processes), and the coordinator's overhead per job (a 4 MiB volume through the API vs the
 * same backup called on the agent directly).
 *
 *   node dist/test/bench/suite.js [--mib 1024] [--rounds 3] [--limits '{"chunkSizeBytes":2097152}']
 *                                 [--json-out FILE]
 */
import { execFile } from "node:child_process";
import { randomBytes, randomUUID } from "node:crypto";
import { writeFileSync } from "node:fs";
import { promisify } from "node:util";
import type { IoCtx } from "../../agents/ceph";
import { BackupMode, RestoreMode } from "../../src/gen/rbdbackup/v1/agent";
import { type Backup, type BackupServiceClient, type Job, JobState } from "../../src/gen/rbdbackup/v1/backup_service";
import { type RunningAgent, startAgent } from "../helpers/agents";
import { backupRequest, startCoordinator, waitAgents } from "../helpers/coordinator";
import { connectLab, labCluster, uniqueName } from "../helpers/lab";
import { cliPipe, rawWriteMiBps } from "./ceph-cli";
import { arg, childrenCpu, cpuOf, limitsArg, median, procMemMiB, resetPeakRss } from "./measure";

const execFileP = promisify(execFile);
const MiB = 1 << 20;
const GiB = 1 << 30;

const mib = Number(arg("mib", "1024"));
const rounds = Number(arg("rounds", "3"));
const limits = limitsArg();
const jsonOut = arg("json-out", "");
const SPARSE_MIB = mib * 4;
const SPARSE_WRITTEN_MIB = 64;

const rbd = (cluster: string, args: string[]) => execFileP("rbd", ["-c", labCluster(cluster).conf, ...args]);

async function follow(api: BackupServiceClient, job: Job): Promise<Job> {
  let last = job;
  for await (const e of api.watchJob({ jobId: job.id })) if (e.job) last = e.job;
  if (last.state !== JobState.JOB_STATE_SUCCEEDED) throw new Error(`job ${last.id}: ${last.errorMessage}`);
  return last;
}

/** Writes `bytes` of random data from offset 0, 16 writes of 4 MiB in flight. */
async function fill(io: IoCtx, image: string, bytes: number): Promise<void> {
  const img = await io.imageOpen(image);
  for (let off = 0; off < bytes; off += 64 * MiB) {
    await Promise.all(
      Array.from({ length: 16 }, (_, i) => {
        const at = off + i * 4 * MiB;
        return at < bytes ? img.write(randomBytes(Math.min(4 * MiB, bytes - at)), at) : 0;
      }),
    );
  }
  await img.flush();
  await img.close();
}

/** `count` random 4 MiB writes, `stride` bytes apart. */
async function scatter(io: IoCtx, image: string, count: number, stride: number): Promise<void> {
  const img = await io.imageOpen(image);
  await Promise.all(Array.from({ length: count }, (_, i) => img.write(randomBytes(4 * MiB), i * stride)));
  await img.flush();
  await img.close();
}

/** ~2% of `sizeBytes` in scattered 4 KiB–1 MiB writes; the same offsets are reused for another image. */
function changePlan(sizeBytes: number, region: number): Array<{ off: number; len: number }> {
  const plan: Array<{ off: number; len: number }> = [];
  let changed = 0;
  while (changed < sizeBytes * 0.02) {
    const len = 4096 + Math.floor(Math.random() * (MiB - 4096));
    plan.push({ off: Math.floor(Math.random() * (region - len)), len });
    changed += len;
  }
  return plan;
}

async function applyChange(io: IoCtx, image: string, plan: Array<{ off: number; len: number }>): Promise<void> {
  const img = await io.imageOpen(image);
  await Promise.all(plan.map((p) => img.write(randomBytes(p.len), p.off)));
  await img.flush();
  await img.close();
}

interface Sample {
  cli: number[];
  ours: number[];
  bytes: number;
  wire: number[];
  rssMiB: number[];
  cpuOurs: number[];
  cpuCli: number[];
}
const newSample = (bytes = 0): Sample => ({ cli: [], ours: [], bytes, wire: [], rssMiB: [], cpuOurs: [], cpuCli: [] });

async function main(): Promise<void> {
  const coord = await startCoordinator();
  const agents: RunningAgent[] = await Promise.all([
    startAgent("site-a", { coordinator: coord.address, limits }),
    startAgent("site-b", { coordinator: coord.address, limits }),
  ]);
  const [agentA, agentB] = agents as [RunningAgent, RunningAgent];
  const api = coord.client;
  await waitAgents(api, 2);
  const ca = await connectLab("site-a");
  const cb = await connectLab("site-b");
  const ioA = await ca.openIoCtx("rbd");
  const ioB = await cb.openIoCtx("backups");
  const ioBr = await cb.openIoCtx("rbd");
  const s = {
    full: newSample(mib * MiB),
    incremental: newSample(),
    incrementalBig: newSample(),
    sparse: newSample(SPARSE_WRITTEN_MIB * MiB),
    dense: newSample(SPARSE_WRITTEN_MIB * MiB),
    restore: newSample(),
  };
  const pids = agents.map((a) => a.proc.pid as number);
  const agentCpu = () => pids.reduce((t, p) => t + cpuOf(p), 0);

  /** Times one side; resets and reads the agents' peak RSS and CPU around ours. */
  async function side(sample: Sample, who: "cli" | "ours", f: () => Promise<number | undefined>): Promise<void> {
    if (who === "ours") for (const p of pids) resetPeakRss(p);
    const cpu0 = who === "ours" ? agentCpu() : childrenCpu();
    const t = process.hrtime.bigint();
    const wire = await f();
    const secs = Number(process.hrtime.bigint() - t) / 1e9;
    if (who === "ours") {
      sample.ours.push(secs);
      sample.cpuOurs.push(agentCpu() - cpu0);
      sample.rssMiB.push(Math.max(...pids.map((p) => procMemMiB(p, "VmHWM"))));
      if (wire !== undefined) sample.wire.push(wire);
    } else {
      sample.cli.push(secs);
      sample.cpuCli.push(childrenCpu() - cpu0);
    }
  }

  try {
    for (let r = 0; r < rounds; r++) {
      const order: Array<"cli" | "ours"> = r % 2 === 0 ? ["cli", "ours"] : ["ours", "cli"];
      const vol = uniqueName("bench-full");
      const sparse = uniqueName("bench-sparse");
      const dense = uniqueName("bench-dense");
      await ioA.imageCreate(vol, mib * MiB);
      await ioA.imageCreate(dense, SPARSE_WRITTEN_MIB * MiB);
      await fill(ioA, dense, SPARSE_WRITTEN_MIB * MiB);
      await ioA.imageCreate(sparse, SPARSE_MIB * MiB);
      await fill(ioA, vol, mib * MiB);
      // 64 MiB scattered over the sparse image: 16 writes of 4 MiB, evenly spread.
      await scatter(ioA, sparse, SPARSE_WRITTEN_MIB / 4, (SPARSE_MIB * MiB) / (SPARSE_WRITTEN_MIB / 4));
      const cliFull = uniqueName("bench-cli");
      const cliSparse = uniqueName("bench-cli");
      const cliDense = uniqueName("bench-cli");
      await ioB.imageCreate(cliFull, mib * MiB);
      await ioB.imageCreate(cliDense, SPARSE_WRITTEN_MIB * MiB);
      await ioB.imageCreate(cliSparse, SPARSE_MIB * MiB);
      const backups: Backup[] = [];
      const ours = async (image: string, mode: BackupMode) => {
        const j = await follow(
          api,
          await api.createBackup(backupRequest({ cluster: "site-a", pool: "rbd", namespace: "", image }, { mode })),
        );
        backups.push(j.backup as Backup);
        return j.backup as Backup;
      };
      const cliBackup = async (image: string, target: string, snap: string, from: string | null) => {
        await rbd("site-a", ["snap", "create", `rbd/${image}@${snap}`]);
        await cliPipe("site-a", `rbd/${image}@${snap}`, from, "site-b", `backups/${target}`);
      };
      /** One scenario of this round: the CLI and ours, in this round's order. */
      const compare = async (
        sample: Sample,
        cli: () => Promise<void>,
        oursRun: () => Promise<number | undefined>,
      ): Promise<void> => {
        for (const who of order) {
          if (who === "cli")
            await side(sample, "cli", async () => {
              await cli();
              return undefined;
            });
          else await side(sample, "ours", oursRun);
        }
      };

      // 1. full
      await compare(
        s.full,
        () => cliBackup(vol, cliFull, "c1", null),
        async () => (await ours(vol, BackupMode.BACKUP_MODE_FULL)).dataBytesSent,
      );
      // 3. sparse
      await compare(
        s.sparse,
        () => cliBackup(sparse, cliSparse, "c1", null),
        async () => (await ours(sparse, BackupMode.BACKUP_MODE_FULL)).dataBytesSent,
      );
      // ... and the same amount of data on an image of its own size: what the sparse image's time should be close to.
      await compare(
        s.dense,
        () => cliBackup(dense, cliDense, "c1", null),
        async () => (await ours(dense, BackupMode.BACKUP_MODE_FULL)).dataBytesSent,
      );
      // 2. incremental: the same ~2% change on the 1 GiB image and on the 4 GiB sparse one.
      const plan = changePlan(mib * MiB, mib * MiB);
      s.incremental.bytes = s.incrementalBig.bytes = plan.reduce((t, p) => t + p.len, 0);
      await applyChange(ioA, vol, plan);
      await applyChange(ioA, sparse, plan);
      let incr: Backup | undefined;
      await compare(
        s.incremental,
        () => cliBackup(vol, cliFull, "c2", "c1"),
        async () => {
          incr = await ours(vol, BackupMode.BACKUP_MODE_INCREMENTAL);
          return incr.dataBytesSent;
        },
      );
      await compare(
        s.incrementalBig,
        () => cliBackup(sparse, cliSparse, "c2", "c1"),
        async () => (await ours(sparse, BackupMode.BACKUP_MODE_INCREMENTAL)).dataBytesSent,
      );
      // 4. restore the incremental to a new volume on site-a.
      const b = incr as Backup;
      const cliRestore = uniqueName("bench-rcli");
      const ourRestore = uniqueName("bench-rours");
      s.restore.bytes = mib * MiB;
      await compare(
        s.restore,
        async () => {
          await rbd("site-a", ["create", "--size", `${mib}M`, `rbd/${cliRestore}`]);
          await cliPipe("site-b", `backups/${cliFull}@c2`, null, "site-a", `rbd/${cliRestore}`);
        },
        async () => {
          const j = await follow(
            api,
            await api.restoreBackup({
              backupId: b.id,
              target: { cluster: "site-a", pool: "rbd", namespace: "", image: ourRestore },
              mode: RestoreMode.RESTORE_MODE_NEW,
              idempotencyKey: "",
            }),
          );
          return j.restore?.dataBytesSent;
        },
      );
      // Free the RAM this round used.
      for (const [cluster, spec] of [
        ["site-a", `rbd/${vol}`],
        ["site-a", `rbd/${sparse}`],
        ["site-a", `rbd/${dense}`],
        ["site-b", `backups/${cliDense}`],
        ["site-a", `rbd/${cliRestore}`],
        ["site-a", `rbd/${ourRestore}`],
        ["site-b", `backups/${cliFull}`],
        ["site-b", `backups/${cliSparse}`],
      ] as const) {
        await rbd(cluster, ["snap", "purge", "--no-progress", spec]).catch(() => {});
        await rbd(cluster, ["rm", "--no-progress", spec]).catch(() => {});
      }
      for (const bk of backups.reverse())
        await follow(api, await api.deleteBackup({ backupId: bk.id, idempotencyKey: "" }));
      process.stderr.write(`round ${r + 1}/${rounds} done\n`);
    }

    // Coordinator overhead: a 4 MiB volume through the API vs the same backup on the agent directly.
    const tiny = uniqueName("bench-tiny");
    await ioA.imageCreate(tiny, 4 * MiB);
    await fill(ioA, tiny, 4 * MiB);
    const viaApi: number[] = [];
    const direct: number[] = [];
    for (let i = 0; i < 10; i++) {
      let t = process.hrtime.bigint();
      const j = await follow(
        api,
        await api.createBackup(
          backupRequest(
            { cluster: "site-a", pool: "rbd", namespace: "", image: tiny },
            { mode: BackupMode.BACKUP_MODE_FULL },
          ),
        ),
      );
      viaApi.push(Number(process.hrtime.bigint() - t) / 1e6);
      await follow(api, await api.deleteBackup({ backupId: j.backupId, idempotencyKey: "" }));
      t = process.hrtime.bigint();
      const d = await agentA.client.backup({
        backupId: randomUUID(),
        source: { $case: "volume", value: { pool: "rbd", namespace: "", image: tiny } },
        destination: { address: agentB.transferAddress, clusterFsid: "" },
        destinationPool: "backups",
        mode: BackupMode.BACKUP_MODE_FULL,
      });
      direct.push(Number(process.hrtime.bigint() - t) / 1e6);
      await agentB.client.deleteBackup({ backupId: d.backupId, pool: "backups", baseImage: d.baseImage });
    }
    await rbd("site-a", ["snap", "purge", "--no-progress", `rbd/${tiny}`]);
    await ioA.imageRemove(tiny);

    // 5. raw write bandwidth of each cluster (the destination of backups, and of restores).
    const rawB = await rawWriteMiBps("site-b", ioBr, mib);
    const rawA = await rawWriteMiBps("site-a", ioA, mib);

    const rows = (
      [
        ["full", `full ${mib} MiB random`, s.full, rawB],
        ["incremental", `incremental ~2% of ${mib} MiB`, s.incremental, rawB],
        ["incremental-4x", `same change on ${SPARSE_MIB} MiB`, s.incrementalBig, rawB],
        ["sparse", `full ${SPARSE_MIB} MiB, ${SPARSE_WRITTEN_MIB} MiB written`, s.sparse, rawB],
        ["dense", `full ${SPARSE_WRITTEN_MIB} MiB, all written`, s.dense, rawB],
        ["restore", `restore ${mib} MiB to site-a`, s.restore, rawA],
      ] as const
    ).map(([id, label, x, rawMiBps]) => {
      const cli = median(x.cli);
      const ours = median(x.ours);
      const moved = x.bytes / MiB;
      return {
        id,
        label,
        cliSeconds: +cli.toFixed(3),
        oursSeconds: +ours.toFixed(3),
        ratio: +(cli / ours).toFixed(2),
        oursMiBps: +(moved / ours).toFixed(1),
        cliMiBps: +(moved / cli).toFixed(1),
        ofRawWrite: +((moved / ours / rawMiBps) * 100).toFixed(0),
        wireMiB: +(median(x.wire) / MiB).toFixed(1),
        changedMiB: +(x.bytes / MiB).toFixed(1),
        agentPeakRssMiB: +Math.max(...x.rssMiB).toFixed(0),
        cpuSecPerGiBOurs: +((median(x.cpuOurs) / x.bytes) * GiB).toFixed(2),
        cpuSecPerGiBCli: +((median(x.cpuCli) / x.bytes) * GiB).toFixed(2),
      };
    });
    const pad = (v: unknown, n: number) => String(v).padStart(n);
    console.log(
      `\nrbdbackup (API → agents, mutual TLS) vs rbd export-diff | rbd import-diff — medians of ${rounds} rounds, alternating\n`,
    );
    console.log(
      `${"scenario".padEnd(34)}${pad("CLI s", 8)}${pad("ours s", 8)}${pad("ratio", 7)}${pad("MiB/s", 8)}${pad("%raw", 6)}${pad("wire MiB", 10)}${pad("RSS MiB", 9)}${pad("CPU s/GiB ours|cli", 20)}`,
    );
    for (const o of rows) {
      console.log(
        `${o.label.padEnd(34)}${pad(o.cliSeconds, 8)}${pad(o.oursSeconds, 8)}${pad(`${o.ratio}x`, 7)}${pad(o.oursMiBps, 8)}${pad(o.ofRawWrite, 6)}${pad(o.wireMiB, 10)}${pad(o.agentPeakRssMiB, 9)}${pad(`${o.cpuSecPerGiBOurs} | ${o.cpuSecPerGiBCli}`, 20)}`,
      );
    }
    console.log(
      `\nraw write (rbd bench, 4 MiB, 16 threads): site-b ${rawB.toFixed(0)} MiB/s, site-a ${rawA.toFixed(0)} MiB/s` +
        `\ncoordinator overhead per job (4 MiB volume): through the API ${median(viaApi).toFixed(0)} ms vs on the agent directly ${median(direct).toFixed(0)} ms (+${(median(viaApi) - median(direct)).toFixed(0)} ms)` +
        `\nincremental: ${rows[1]?.changedMiB} MiB changed → ${rows[1]?.wireMiB} MiB on the wire; the same change on a ${SPARSE_MIB} MiB image took ${rows[2]?.oursSeconds} s vs ${rows[1]?.oursSeconds} s` +
        `\nsparse: ${rows[3]?.wireMiB} MiB of data on the wire for ${SPARSE_WRITTEN_MIB} MiB written; ${rows[3]?.oursSeconds} s for the ${SPARSE_MIB} MiB image vs ${rows[4]?.oursSeconds} s for a ${SPARSE_WRITTEN_MIB} MiB image holding as much data`,
    );
    const json = {
      bench: "suite",
      at: new Date().toISOString(),
      mib,
      rounds,
      limits,
      results: rows,
      rawWriteMiBps: { "site-a": +rawA.toFixed(1), "site-b": +rawB.toFixed(1) },
      coordinatorOverheadMs: { api: +median(viaApi).toFixed(1), direct: +median(direct).toFixed(1) },
    };
    console.log(`\nJSON ${JSON.stringify(json)}`);
    if (jsonOut) writeFileSync(jsonOut, `${JSON.stringify(json, null, 2)}\n`);
  } finally {
    await ioA.close();
    await ioB.close();
    await ioBr.close();
    await ca.close();
    await cb.close();
    await Promise.all(agents.map((a) => a.stop()));
    await coord.stop();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
