/**
 * The free-space margin check: before a transfer creates or writes anything, the destination makes
 * sure the bytes it may write, plus a margin of the cluster's capacity, fit in what the cluster has
 * available — so a transfer that cannot fit is refused up front (RESOURCE_EXHAUSTED, nothing created)
 * instead of driving the pool's OSDs to 100 %.
 *
 * What "may write" means per kind: BACKUP_FULL, RESTORE_NEW and RESTORE_ORIGINAL may write up to the
 * header's image size (the stream does not declare its data bytes ahead, and an image is thin, so this
 * is an upper bound). BACKUP_INCREMENTAL writes only a diff whose size nobody knows ahead; the image
 * size would refuse most incrementals, so it is left to the full flags (pool-watch.ts).
 *
 * Ceph reports raw bytes available (before replication), so on a replicated pool this check is a
 * lower bound of what is needed: it stops the hopeless cases, the full-flag watch stops the rest.
 */
import { resourceExhausted } from "../../../src/common/errors";
import { type TransferHeader, TransferKind } from "../../../src/gen/rbdbackup/v1/transfer";
import type { SinkCluster } from "./ports";

/**
 * The share of the cluster's capacity that must stay free after the transfer. A constant for now
 * (a config field would be `limits.freeSpaceMarginPercent`, 0..50, default 5).
 */
export const FREE_SPACE_MARGIN = 0.05;

/** The bytes a transfer of this kind may write, or 0 when that is not known ahead (incrementals). */
export function bytesToWrite(h: TransferHeader): number {
  switch (h.kind) {
    case TransferKind.BACKUP_FULL:
    case TransferKind.RESTORE_NEW:
    case TransferKind.RESTORE_ORIGINAL:
      return h.imageSize;
    default:
      return 0;
  }
}

const KIND_WORDS: Partial<Record<TransferKind, string>> = {
  [TransferKind.BACKUP_FULL]: "full backup",
  [TransferKind.RESTORE_NEW]: "restore",
  [TransferKind.RESTORE_ORIGINAL]: "restore",
};

/** Refuses (RESOURCE_EXHAUSTED) a transfer whose bytes plus the margin do not fit in the cluster's available bytes. */
export async function checkRoom(
  cluster: Pick<SinkCluster, "stat">,
  h: TransferHeader,
  clusterName: string,
  margin = FREE_SPACE_MARGIN,
): Promise<void> {
  const need = bytesToWrite(h);
  if (need <= 0) return;
  const st = await cluster.stat();
  const reserve = Math.ceil(st.bytes * margin);
  if (need + reserve <= st.bytesAvailable) return;
  const what = KIND_WORDS[h.kind] ?? "transfer";
  const pct = Math.round(margin * 100);
  throw resourceExhausted(
    `cluster ${clusterName} is too full for this ${what}: it has ${human(st.bytesAvailable)} available, ` +
      `this ${what} needs ${human(need)} plus a ${pct} % margin (${human(reserve)}): free space or add capacity`,
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
