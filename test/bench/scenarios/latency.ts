/**
 * Realistic-latency scenario (issue 16): OSD operations delayed as on a real cluster, where keeping
 * writes in flight matters, then a full backup through the coordinator against the CLI (`rbd snap create`,
 * then `rbd export-diff | rbd import-diff`, as the full scenario times it) and against raw `rbd bench` write
 * (4 MiB, 16 threads) on the destination — the aim: ours ≥ 90% of raw when the OSDs are the bottleneck.
 *
 * The delay is Ceph's messenger fault injection on the OSDs: `ms_inject_delay_type client`,
 * `ms_inject_delay_probability 1`, `ms_inject_delay_max D` holds each message from a client for a
 * uniform 0..D s (in order, pipelined: 16 requests in flight overlap their delays). Measured on the lab
 * with `rbd bench` (cache off, 4 KiB, 1 thread): ~0.3 ms → ~15 ms per write at D = 20 ms, and 16
 * threads ~18× one. (`osd_debug_inject_dispatch_delay_*` instead sleeps in the dispatch thread: it
 * serializes clients, 16 threads barely 2× one — not a latency.) It is set on both clusters of a lab of
 * the scenario's own (deploy/lab/lab.sh, 4G each — more for images over 1 GiB — in a new directory; never the shared lab), before the
 * agents connect (a connection picks the delay up when it is made), and the lab is stopped at the end —
 * also on failure or Ctrl-C. The measuring runs in a child process whose RBDBACKUP_LAB_DIR names that
 * lab (the test helpers read it when loaded).
 *
 *   node dist/test/bench/scenarios/latency.js [--mib 256] [--rounds 1] [--delay-ms 100]
 */
import { execFile, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import path from "node:path";
import { promisify } from "node:util";
import type { IoCtx } from "../../../agents/ceph";
import { BackupMode } from "../../../src/gen/rbdbackup/v1/agent";
import { type RunningAgent, startAgent } from "../../helpers/agents";
import { startCoordinator, waitAgents } from "../../helpers/coordinator";
import { connectLab, labCluster, labDir, rbd, repoRoot, uniqueName } from "../../helpers/lab";
import { rawWriteMiBps, cliPipe as runCliPipe } from "../ceph-cli";
import { busyFraction, hostCpu } from "../host-cpu";
import { interrupting, onInterrupt } from "../interrupt";
import { ceph as cephAt, trimRemovedSnapshots } from "../lab-trim";
import { arg, cpuOf, median, procMemMiB, resetPeakRss } from "../measure";
import { fill, follow, logTails } from "../rig";
import { runAlone } from "../scenario-main";
import {
  backupTimed,
  breakdown,
  type Deployment,
  detailLines,
  grouped,
  groupedNote,
  hygieneSettled,
  settleLogs,
} from "./backup-timing";
import type { Row, Scenario, ScenarioContext } from "./types";

const execFileP = promisify(execFile);
const MiB = 1 << 20;
const GiB = 1 << 30;
const DELAY_KEYS = ["ms_inject_delay_type", "ms_inject_delay_max", "ms_inject_delay_probability"];

const ceph = (cluster: string, args: string[]) => cephAt(labCluster(cluster).conf, args);

async function setDelay(delayMs: number): Promise<void> {
  for (const c of ["site-a", "site-b"]) {
    await ceph(c, ["config", "set", "osd", "ms_inject_delay_type", "client"]);
    await ceph(c, ["config", "set", "osd", "ms_inject_delay_probability", "1"]);
    await ceph(c, ["config", "set", "osd", "ms_inject_delay_max", String(delayMs / 1000)]);
  }
}

async function resetDelay(): Promise<void> {
  for (const c of ["site-a", "site-b"])
    for (const k of DELAY_KEYS) await ceph(c, ["config", "rm", "osd", k]).catch(() => {});
}

/** ms per 4 KiB write, one in flight, rbd cache off: the OSD round trip. */
async function writeLatencyMs(cluster: string, io: IoCtx): Promise<number> {
  const name = uniqueName("bench-lat");
  await io.imageCreate(name, 16 * MiB);
  try {
    const out = await rbd(cluster, [
      "--rbd_cache=false",
      "bench",
      "--io-type",
      "write",
      "--io-size",
      "4K",
      "--io-threads",
      "1",
      "--io-total",
      "200K",
      `${io.pool}/${name}`,
    ]);
    const ops = /ops\/sec:\s*([\d.]+)/.exec(out)?.[1];
    if (!ops) throw new Error(`rbd bench printed no ops/sec: ${out.slice(-300)}`);
    return 1000 / Number(ops);
  } finally {
    await io.imageRemove(name);
  }
}

/** The measuring half, in the child process whose RBDBACKUP_LAB_DIR is the scenario's own lab. */
async function measure(mib: number, rounds: number, delayMs: number, limits: Record<string, number>): Promise<Row> {
  const log = (l: string) => process.stderr.write(`${l}\n`);
  const bytes = mib * MiB;
  const stops: Array<() => Promise<unknown>> = [];
  const cleanup = async () => {
    // Taken at once: the interrupt's cleanup and the finally's may overlap; each step runs once.
    for (const s of stops.splice(0).reverse()) await s().catch((e) => log(`latency cleanup: ${(e as Error).message}`));
  };
  const unhook = onInterrupt(cleanup);
  try {
    const ca = await connectLab("site-a");
    stops.push(() => ca.close());
    const cb = await connectLab("site-b");
    stops.push(() => cb.close());
    const ioA = await ca.openIoCtx("rbd");
    stops.push(() => ioA.close());
    const ioBr = await cb.openIoCtx("rbd");
    stops.push(() => ioBr.close());
    const image = uniqueName("bench-lat-full");
    await ioA.imageCreate(image, bytes);
    stops.push(async () => {
      await rbd("site-a", ["snap", "purge", "--no-progress", `rbd/${image}`]).catch(() => {});
      await ioA.imageRemove(image);
    });
    await fill(ioA, image, bytes);

    // Before and after the delay: the OSD round trip and raw write bandwidth of the destination.
    const latBefore = await writeLatencyMs("site-b", ioBr);
    const rawBefore = await rawWriteMiBps("site-b", ioBr, mib);
    stops.push(() => resetDelay());
    await setDelay(delayMs);
    const latAfter = await writeLatencyMs("site-b", ioBr);
    const rawAfter = await rawWriteMiBps("site-b", ioBr, mib);
    log(
      `latency: 4 KiB write ${latBefore.toFixed(1)} → ${latAfter.toFixed(1)} ms; rbd bench write ${rawBefore.toFixed(0)} → ${rawAfter.toFixed(0)} MiB/s`,
    );

    // Agents connect after the delay is set (connections pick it up when made).
    const coord = await startCoordinator();
    stops.push(() => coord.stop());
    const agents: RunningAgent[] = await Promise.all([
      startAgent("site-a", { coordinator: coord.address, limits }),
      startAgent("site-b", { coordinator: coord.address, limits }),
    ]);
    stops.push(() => Promise.all(agents.map((a) => a.stop())));
    const api = coord.client;
    await waitAgents(api, 2);
    const pids = agents.map((a) => a.proc.pid as number);
    const [agentA, agentB] = agents as [RunningAgent, RunningAgent];
    const deployment: Deployment = {
      api,
      coord,
      a: agentA,
      b: agentB,
      agentCpu: () => [cpuOf(pids[0] as number), cpuOf(pids[1] as number)],
    };
    const phases: Array<Record<string, number>> = [];

    const s = {
      cli: [] as number[],
      cliPipe: [] as number[],
      ours: [] as number[],
      cpuExp: [] as number[],
      cpuImp: [] as number[],
    };
    const o = {
      cpuSrc: [] as number[],
      cpuDst: [] as number[],
      rss: [] as number[],
      busy: [] as number[],
      sent: [] as number[],
    };
    for (let r = 0; r < rounds; r++) {
      const cliSide = async () => {
        const snap = `c${r}`;
        const target = uniqueName("bench-lat-cli");
        await rbd("site-b", ["create", "--size", `${mib}M`, `backups/${target}`]);
        try {
          // As the full scenario: the CLI's snapshot is part of its backup (ours makes one inside its time).
          const t = performance.now();
          await rbd("site-a", ["snap", "create", `rbd/${image}@${snap}`]);
          const tPipe = performance.now();
          const piped = await runCliPipe("site-a", `rbd/${image}@${snap}`, null, "site-b", `backups/${target}`);
          const cpu = { exportCpu: piped.exportSeconds, importCpu: piped.importSeconds };
          s.cli.push((performance.now() - t) / 1000);
          s.cliPipe.push((performance.now() - tPipe) / 1000);
          s.cpuExp.push(cpu.exportCpu);
          s.cpuImp.push(cpu.importCpu);
        } finally {
          await rbd("site-b", ["snap", "purge", "--no-progress", `backups/${target}`]).catch(() => {});
          await rbd("site-b", ["rm", "--no-progress", `backups/${target}`]).catch(() => {});
          await rbd("site-a", ["snap", "rm", "--no-progress", `rbd/${image}@${snap}`]).catch(() => {});
        }
      };
      const oursSide = async () => {
        for (const p of pids) resetPeakRss(p);
        const cpu0 = pids.map(cpuOf);
        const host0 = hostCpu();
        const ids: string[] = [];
        const timed = await backupTimed(api, image, BackupMode.BACKUP_MODE_FULL, ids);
        s.ours.push(timed.seconds);
        o.busy.push(busyFraction(host0, hostCpu()));
        o.cpuSrc.push(cpuOf(pids[0] as number) - (cpu0[0] as number));
        o.cpuDst.push(cpuOf(pids[1] as number) - (cpu0[1] as number));
        const [peakA, peakB] = pids.map((p) => procMemMiB(p, "VmHWM")) as [number, number];
        o.rss.push(Math.max(peakA, peakB));
        log(`latency: peak RSS source ${peakA.toFixed(0)} MiB, destination ${peakB.toFixed(0)} MiB`);
        await settleLogs();
        phases.push(breakdown(timed, deployment));
        o.sent.push(Number((await api.getBackup({ backupId: timed.job.backupId })).dataBytesSent));
        await follow(api, await api.deleteBackup({ backupId: timed.job.backupId, idempotencyKey: "" }));
        // The delete's sweep of the volume's snapshot holds the volume until done: not in the next round's time.
        await hygieneSettled(ioA, image, null);
      };
      try {
        for (const side of r % 2 === 0 ? [cliSide, oursSide] : [oursSide, cliSide]) {
          // The lab holds trimming off (nosnaptrim): what the other side removed stays in the OSDs' RAM,
          // and counts as used, until trimmed — without this the pool filled up (RESOURCE_EXHAUSTED, the
          // job retried until the bench's watch gave up: the "hang" of the seventeenth round).
          await trimRemovedSnapshots(labDir, ["site-a", "site-b"], log);
          await side();
        }
      } catch (e) {
        logTails(log, "latency", [
          ["coordinator", coord],
          ["site-a agent", agentA],
          ["site-b agent", agentB],
        ]);
        throw e;
      }
      log(`latency round ${r + 1}/${rounds}: CLI ${s.cli.at(-1)?.toFixed(2)} s, ours ${s.ours.at(-1)?.toFixed(2)} s`);
    }

    log("latency: where ours' milliseconds went (p50 [min–max] over the rounds):");
    for (const l of detailLines(phases)) log(l);
    const cli = median(s.cli);
    const cliPipe = median(s.cliPipe);
    const ours = median(s.ours);
    const perGiB = (x: number[]) => +((median(x) / bytes) * GiB).toFixed(2);
    const oursMiBps = mib / ours;
    const busy = median(o.busy);
    // The data phase alone: the destination's receive (every chunk written through its window).
    const receiveMs = median(phases.map((p) => grouped(p).diffTransfer as number));
    const dataMiBps = mib / (receiveMs / 1000);
    return {
      scenario: `full ${mib} MiB random, OSD ops delayed 0–${delayMs} ms`,
      cliSeconds: +cli.toFixed(3),
      oursSeconds: +ours.toFixed(3),
      ratio: +(cli / ours).toFixed(2),
      oursMiBps: +oursMiBps.toFixed(1),
      wireMiB: +(median(o.sent) / MiB).toFixed(1),
      agentPeakRssMiB: +Math.max(...o.rss).toFixed(0),
      cpuPerGiB: {
        sourceAgent: perGiB(o.cpuSrc),
        destinationAgent: perGiB(o.cpuDst),
        cliExport: perGiB(s.cpuExp),
        cliImport: perGiB(s.cpuImp),
      },
      // The OSDs' ops are delayed on purpose (0–100 ms each): the evidence for "OSD" is the injection.
      bound: busy >= 0.9 ? "CPU" : "OSD",
      note: [
        `raw rbd bench write (4 MiB × 16) ${rawAfter.toFixed(0)} MiB/s with the delay (${rawBefore.toFixed(0)} without)`,
        `ours ${((oursMiBps / rawAfter) * 100).toFixed(0)}% of raw (aim ≥ 90%), CLI ${((mib / cli / rawAfter) * 100).toFixed(0)}% (${((mib / cliPipe / rawAfter) * 100).toFixed(0)}% timing its pipe alone, ${cliPipe.toFixed(2)} s)`,
        `its data phase (the destination's receive, ${Math.round(receiveMs)} ms) ${dataMiBps.toFixed(0)} MiB/s, ${((dataMiBps / rawAfter) * 100).toFixed(0)}% of raw; the rest of its ${ours.toFixed(2)} s is the job's fixed round trips`,
        `4 KiB write ${latBefore.toFixed(1)} → ${latAfter.toFixed(1)} ms`,
        `host CPU ${(busy * 100).toFixed(0)}% busy during ours`,
        `ms p50: ${groupedNote(phases)}`,
      ].join("; "),
    };
  } finally {
    unhook();
    await cleanup();
  }
}

/** Starts the scenario's own lab, runs `measure` in a child against it, stops the lab. */
async function run(ctx: ScenarioContext): Promise<Row[]> {
  const delayMs = Number(arg("delay-ms", "100"));
  const labDir = mkdtempSync("/tmp/rbdbackup-latency-lab-");
  const env = { ...process.env, RBDBACKUP_LAB_DIR: labDir };
  const lab = (...args: string[]) =>
    execFileP(path.join(repoRoot, "deploy/lab/lab.sh"), args, { env, timeout: 300_000 });
  let child: ReturnType<typeof spawn> | undefined;
  // Once, whoever asks first (the interrupt's handler or the finally).
  let cleaning: Promise<void> | undefined;
  const cleanup = () => (cleaning ??= stopAll());
  const stopAll = async () => {
    if (child && child.exitCode === null && child.signalCode === null) {
      child.kill("SIGTERM");
      await new Promise((r) => {
        const t = setTimeout(r, 30_000);
        child?.once("exit", () => {
          clearTimeout(t);
          r(undefined);
        });
      });
    }
    await lab("down", "site-a", "site-b").catch((e) => ctx.log(`lab down: ${(e as Error).message}`));
    rmSync(labDir, { recursive: true, force: true });
  };
  const unhook = onInterrupt(cleanup);
  try {
    // Each site holds the image (or its copy) and the raw bench's data at once: 4G up to 1 GiB images,
    // then room for 2.5 × the image (2 GiB: 6G per site, RAM the memstore OSDs keep).
    const capacityG = Math.max(4, Math.ceil((ctx.mib * 2.5) / 1024) + 1);
    ctx.log(`latency: starting a lab of its own in ${labDir} (site-a, site-b, ${capacityG}G each)`);
    await lab("up", "--capacity", `${capacityG}G`, "site-a", "site-b");
    for (const c of ["site-a", "site-b"])
      await execFileP(
        "ceph",
        ["-c", path.join(labDir, c, "ceph.conf"), "--connect-timeout", "20", "osd", "set", "nosnaptrim"],
        {
          timeout: 60_000,
        },
      );
    const args = [
      __filename,
      "--child",
      "--mib",
      String(ctx.mib),
      "--rounds",
      String(ctx.rounds),
      "--delay-ms",
      String(delayMs),
      "--limits",
      JSON.stringify(ctx.limits),
    ];
    child = spawn(process.execPath, args, { env, stdio: ["ignore", "pipe", "inherit"] });
    let out = "";
    child.stdout?.on("data", (d: Buffer) => {
      out += d.toString();
    });
    const code = await new Promise<number | null>((resolve, reject) => {
      child?.once("error", reject);
      child?.once("exit", resolve);
    });
    const line = out.split("\n").find((l) => l.startsWith("ROW "));
    if (code !== 0 || !line) throw new Error(`latency measurement exited ${code}`);
    return [JSON.parse(line.slice(4)) as Row];
  } finally {
    unhook();
    await cleanup();
  }
}

export const latency: Scenario = {
  name: "latency",
  describe: "full backup vs CLI pipe vs raw rbd bench with OSD operations delayed (Ceph ms_inject_delay_*, own lab)",
  needsRoot: false,
  run,
};
export default latency;

if (require.main === module) {
  if (process.argv.includes("--child")) {
    measure(
      Number(arg("mib", "256")),
      Number(arg("rounds", "1")),
      Number(arg("delay-ms", "100")),
      JSON.parse(arg("limits", "{}")) as Record<string, number>,
    ).then(
      (row) => process.stdout.write(`ROW ${JSON.stringify(row)}\n`),
      (e) => {
        if (interrupting()) return; // the interrupt's cleanup exits when done
        console.error(e);
        process.exit(1);
      },
    );
  } else runAlone(latency);
}
