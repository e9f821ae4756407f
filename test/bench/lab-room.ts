/**
 * Room in the lab's clusters before a scenario runs. A memstore OSD that fills does not fail writes: they
 * wait, so `rbd import-diff` waited out its deadline (600 s) on a lab brought up small (the demo's), and
 * the round failed ten minutes later with "is an OSD full?". Each scenario says what it writes into the
 * shared lab (Scenario.writes: MiB per cluster over all its rounds — removed snapshots keep their data
 * until the suite's trim between scenarios); the suite compares that with what each cluster can still take
 * before its full ratio (each OSD's statfs counters, from its admin socket: the lab runs no manager, so
 * `ceph df` and librados' cluster stat report nothing) and
 * skips the scenario at once, saying what it needs and how to bring up a lab that has it.
 */
import { readdirSync } from "node:fs";
import path from "node:path";
import type { ClusterStat } from "../../agents/ceph";
import { adminSocket } from "./lab-trim";

/** What a scenario writes into one cluster of the shared lab (all its pools), MiB. */
export interface SiteWrite {
  site: string;
  mib: number;
}

/** Headroom over a scenario's own estimate (metadata, digests, allocation rounding). */
export const ROOM_MARGIN = 1.25;
/** Writes past this share of capacity wait (the OSDs' full ratio, 0.95, with a little room to spare). */
export const FULL_SHARE = 0.9;

const MiB = 2 ** 20;

/** MiB a cluster can still take before writes would wait. */
export function usableMiB(st: Pick<ClusterStat, "bytes" | "bytesUsed">): number {
  return Math.max(0, Math.floor((st.bytes * FULL_SHARE - st.bytesUsed) / MiB));
}

/**
 * The reason a scenario cannot run (null: every cluster has room). `usable` maps a site to usableMiB();
 * a site missing from it is reported as missing. Needs of one site are summed.
 */
export function roomVerdict(writes: readonly SiteWrite[], usable: ReadonlyMap<string, number>): string | null {
  const need = new Map<string, number>();
  for (const w of writes) need.set(w.site, (need.get(w.site) ?? 0) + w.mib);
  const short: string[] = [];
  let mostMiB = 0;
  for (const [site, mib] of need) {
    const want = Math.ceil(mib * ROOM_MARGIN);
    mostMiB = Math.max(mostMiB, want);
    const has = usable.get(site);
    if (has === undefined) short.push(`${site} is not in the lab`);
    else if (has < want) short.push(`${site} needs ~${want} MiB, can take ${has} MiB`);
  }
  if (short.length === 0) return null;
  const capacityG = Math.max(16, Math.ceil(mostMiB / FULL_SHARE / 1024));
  return `no room: ${short.join("; ")} — bring the lab up larger (deploy/lab/lab.sh up --capacity ${capacityG}G site-a site-b) or pass a smaller --mib`;
}

/** usableMiB() of each site under `labDir`: its OSDs' own statfs counters (admin socket `perf dump`). */
export async function siteRoom(labDir: string, sites: readonly string[]): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  for (const site of sites) {
    const runDir = path.join(labDir, site, "run");
    let mib = 0;
    for (const sock of readdirSync(runDir).filter((f) => /^osd\.\d+\.asok$/.test(f))) {
      const dump = (await adminSocket(path.join(runDir, sock), { prefix: "perf dump" })) as {
        osd?: { stat_bytes?: number; stat_bytes_used?: number };
      };
      mib += usableMiB({ bytes: dump.osd?.stat_bytes ?? 0, bytesUsed: dump.osd?.stat_bytes_used ?? 0 });
    }
    out.set(site, mib);
  }
  return out;
}
