/**
 * The free-space margin check: before a transfer creates or writes anything, the destination makes
 * sure its cluster is not already within a margin of full (RESOURCE_EXHAUSTED, nothing created) — so a
 * retried or queued transfer never drives the OSDs from "nearly full" to 100 %. During the transfer the
 * full-flag watch (pool-watch.ts) stops writes once the cluster says it is full.
 *
 * Why not "image size must fit": images are thin, and a backup or restore writes only the allocated
 * data, which nobody declares ahead. A 4 TiB volume holding 10 GiB must back up into a cluster with
 * 100 GiB free; comparing its size would refuse it. What is known ahead is how close to full the
 * cluster already is.
 *
 * Ceph reports raw bytes (before replication): the margin is a share of raw capacity. A cluster
 * whose usage is unknown (no manager running: it reports 0 of 0 bytes) is not judged here.
 */
import { resourceExhausted } from "../../../src/common/errors";
import { type TransferHeader, TransferKind } from "../../../src/gen/rbdbackup/v1/transfer";
import type { SinkCluster } from "./ports";

/**
 * The share of the cluster's capacity that must be free for a transfer to start. A constant for now
 * (a config field would be `limits.freeSpaceMarginPercent`, 0..50, default 5).
 */
export const FREE_SPACE_MARGIN = 0.05;

const KIND_WORDS: Partial<Record<TransferKind, string>> = {
  [TransferKind.BACKUP_FULL]: "full backup",
  [TransferKind.BACKUP_INCREMENTAL]: "incremental backup",
  [TransferKind.RESTORE_NEW]: "restore",
  [TransferKind.RESTORE_ORIGINAL]: "restore",
  [TransferKind.FAILBACK]: "failback",
};

/** Refuses (RESOURCE_EXHAUSTED) a transfer into a cluster whose free space is within the margin. */
export async function checkRoom(
  cluster: Pick<SinkCluster, "stat">,
  h: TransferHeader,
  clusterName: string,
  margin = FREE_SPACE_MARGIN,
): Promise<void> {
  const st = await cluster.stat();
  // A cluster without a running manager reports no usage (0 of 0): nothing to judge by, so the
  // full-flag watch alone applies (the OSD map's full flags do not need a manager).
  if (st.bytes <= 0) return;
  const reserve = Math.ceil(st.bytes * margin);
  if (st.bytesAvailable > reserve) return;
  const what = KIND_WORDS[h.kind] ?? "transfer";
  const pct = Math.round(margin * 100);
  throw resourceExhausted(
    `cluster ${clusterName} is nearly full: ${human(st.bytesAvailable)} of ${human(st.bytes)} available, ` +
      `at most the ${pct} % kept free (${human(reserve)}); this ${what} was not started: free space or add capacity`,
  );
}

/** Bytes for people: "1.2 GiB", "512 MiB", "300 B". */
export function human(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  if (i === 0) return `${n} B`;
  return `${v >= 10 || Number.isInteger(v) ? Math.round(v) : v.toFixed(1)} ${units[i]}`;
}
