/**
 * Snapshot trimming between benchmark scenarios. The bench lab holds trimming off (`nosnaptrim`,
 * test/bench/run.sh: Ceph 16's memstore OSD can crash trimming under load), so the data of every
 * removed snapshot stays in the OSD's RAM — over a whole `npm run bench:readme` that grew each OSD past
 * 11 GiB and the kernel killed site-b's (2 OSDs, 23 GiB). Between scenarios, with no I/O running, each
 * OSD trims what the scenario removed, then trimming is held again.
 *
 * Done is read from the OSDs themselves (their admin sockets: every PG's `snap_trimq` empty and no
 * `snaptrim` state), not from the monitor's removed-snapshot queue, which OSDs clear only in their
 * beacons (every 300 s). Bounded: gives up after `deadlineMs` with a line in the log, and trimming is
 * held again in every case. A lab without `nosnaptrim` set is left alone.
 */
import { execFile } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import net from "node:net";
import path from "node:path";
import { promisify } from "node:util";
import { waitFor } from "../helpers/wait";
import { procMemMiB } from "./measure";

const execFileP = promisify(execFile);

/** One admin-socket command: JSON + NUL out, a 4-byte big-endian length and the JSON reply back. */
export function adminSocket(sock: string, command: Record<string, unknown>, timeoutMs = 10_000): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const s = net.connect(sock);
    const chunks: Buffer[] = [];
    s.setTimeout(timeoutMs, () => s.destroy(new Error(`admin socket ${sock}: no answer in ${timeoutMs} ms`)));
    s.on("connect", () => s.write(`${JSON.stringify(command)}\0`));
    s.on("data", (d: Buffer) => chunks.push(d));
    s.on("error", reject);
    s.on("end", () => {
      const b = Buffer.concat(chunks);
      if (b.length < 4) return reject(new Error(`admin socket ${sock}: short reply to ${command.prefix}`));
      const n = b.readUInt32BE(0);
      try {
        resolve(JSON.parse(b.subarray(4, 4 + n).toString()));
      } catch (e) {
        reject(new Error(`admin socket ${sock}: ${command.prefix}: ${(e as Error).message}`));
      }
    });
  });
}

/** PGs of one OSD still trimming (a non-empty snap_trimq, or a snaptrim / snaptrim_wait state). */
export async function trimmingPgs(sock: string): Promise<number> {
  const hist = (await adminSocket(sock, { prefix: "dump_pgstate_history" })) as { pgs: Array<{ pg: string }> };
  let busy = 0;
  for (const { pg } of hist.pgs) {
    const q = (await adminSocket(sock, { prefix: "query", pgid: pg })) as { state: string; snap_trimq_len: number };
    if (q.snap_trimq_len > 0 || q.state.includes("snaptrim")) busy++;
  }
  return busy;
}

/** `ceph -c conf …args` with a 20 s connect timeout and a 60 s deadline. */
export const ceph = (conf: string, args: string[]) =>
  execFileP("ceph", ["-c", conf, "--connect-timeout", "20", ...args], { timeout: 60_000 });

/** An OSD's resident MiB, from its pid file (0 when it is gone). */
function rssMiB(runDir: string, osd: string): number {
  try {
    return Math.round(procMemMiB(Number(readFileSync(path.join(runDir, `${osd}.pid`), "utf8").trim()), "VmRSS"));
  } catch {
    return 0;
  }
}

/** Lets the OSDs of `sites` (lab directories under `labDir`) trim removed snapshots, then holds trimming again. */
export async function trimRemovedSnapshots(
  labDir: string,
  sites: string[],
  log: (line: string) => void,
  deadlineMs = 300_000,
): Promise<void> {
  await Promise.all(
    sites.map(async (site) => {
      const conf = path.join(labDir, site, "ceph.conf");
      const runDir = path.join(labDir, site, "run");
      let flags: string[];
      try {
        flags = (JSON.parse((await ceph(conf, ["osd", "dump", "--format", "json"])).stdout) as { flags_set: string[] })
          .flags_set;
      } catch (e) {
        log(`lab trim: ${site}: ${(e as Error).message.split("\n")[0]} — not trimmed`);
        return;
      }
      if (!flags.includes("nosnaptrim")) return; // trims by itself
      const osds = readdirSync(runDir)
        .filter((f) => /^osd\.\d+\.asok$/.test(f))
        .map((f) => f.replace(/\.asok$/, ""));
      const before = osds.map((o) => rssMiB(runDir, o));
      const t0 = Date.now();
      let left = -1; // PGs still trimming at the last look; -1: never looked
      try {
        // Without a pause between trim batches (a memstore OSD counts as rotational: 5 s each, which made
        // trimming 128 MiB take ~50 s).
        for (const k of ["osd_snap_trim_sleep_hdd", "osd_snap_trim_sleep_hybrid", "osd_snap_trim_sleep_ssd"])
          await ceph(conf, ["config", "set", "osd", k, "0"]);
        await ceph(conf, ["osd", "unset", "nosnaptrim"]);
        await waitFor(
          async () => {
            left = 0;
            for (const o of osds) left += await trimmingPgs(path.join(runDir, `${o}.asok`));
            return left === 0;
          },
          { what: () => `${site}'s OSDs to trim (${left} PGs left)`, timeoutMs: deadlineMs, intervalMs: 500 },
        );
      } catch (e) {
        log(`lab trim: ${site}: ${(e as Error).message.split("\n")[0]}`);
      } finally {
        await ceph(conf, ["osd", "set", "nosnaptrim"]).catch((e) =>
          log(`lab trim: ${site}: could not set nosnaptrim again: ${(e as Error).message.split("\n")[0]}`),
        );
      }
      const after = osds.map((o) => rssMiB(runDir, o));
      log(
        `lab trim: ${site} ${left === 0 ? "trimmed" : left > 0 ? `still trimming ${left} PGs` : "not trimmed"} in ${((Date.now() - t0) / 1000).toFixed(1)} s; OSD RSS ${before.join("/")} → ${after.join("/")} MiB`,
      );
    }),
  );
}
