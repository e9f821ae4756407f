/**
 * What the CLI prints of verification: a backup's integrity (digest map, last verification, the first
 * bad extent of a CORRUPT backup) and a VERIFY job's result. Rows for format.ts's key: value blocks.
 */
import { type VerifyResult, verifyModeToJSON } from "../gen/rbdbackup/v1/agent";
import type { BackupIntegrity } from "../gen/rbdbackup/v1/backup_service";

type Row = [string, string | undefined];

export const verifyModeName = (m: number): string => verifyModeToJSON(m).replace("VERIFY_MODE_", "").toLowerCase();

/** Offset and length as "offset 4194304 (+65536 bytes)". */
const extent = (offset: number, length: number): string | undefined =>
  length ? `offset ${offset} (+${length} bytes)` : undefined;

export function integrityRows(i: BackupIntegrity | undefined, time: (d: Date | undefined) => string): Row[] {
  if (!i) return [];
  const verified = i.lastVerifiedAt
    ? `${time(i.lastVerifiedAt)} (${verifyModeName(i.lastVerifyMode)}, ${i.lastVerifyOk ? "ok" : "MISMATCH"})`
    : "never";
  return [
    ["digest map", i.imageDigest ? `sha256 ${i.imageDigest}, blocks of ${i.digestBlockSize} bytes` : "none"],
    ["last verified", verified],
    ["corrupt", i.corruptReason || undefined],
    ["first bad extent", extent(i.firstBadOffset, i.firstBadLength)],
  ];
}

export function verifyRows(v: VerifyResult | undefined, seconds: (s: number) => string): Row[] {
  if (!v) return [];
  return [
    ["verify", `${verifyModeName(v.mode)}: ${v.ok ? "ok" : "MISMATCH (the backup is CORRUPT)"}`],
    ["blocks checked", String(v.blocksChecked)],
    ["bad blocks", v.badBlocks ? String(v.badBlocks) : undefined],
    ["first bad extent", extent(v.firstBadOffset, v.firstBadLength)],
    ["mismatch", v.reason || undefined],
    ["verify time", v.seconds > 0 ? seconds(v.seconds) : undefined],
    ...v.warnings.map((w): Row => ["warning", w]),
  ];
}
