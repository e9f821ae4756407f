/**
 * The rebuild planner, pure: given the meta objects a scan found on a backup cluster and what the
 * catalog holds, decide for each one — present (the catalog has its id: left as it is), import (a
 * Backup record, AVAILABLE, from what the meta holds), or skip with a reason a person can act on:
 * the meta does not parse; its snapshot is missing on its base image; its parent is on another base
 * image, or its chain loops; its id was found in two places; its source cluster cannot be named. An
 * incremental whose parent is gone (deleted by retention or DeleteBackup: its meta and snapshot
 * removed) or not importable is imported on its own, with a warning naming the parent — it stays
 * restorable, and is its chain's newest backup the next incremental builds on. Imports are grouped by
 * chain (base image), parents before children, so the writer can commit one chain per transaction.
 */

import { type Backup, BackupIntegrity, BackupStatus, type RebuildFinding } from "../../gen/rbdbackup/v1/backup_service";
import type { VolumeRef } from "../../gen/rbdbackup/v1/common";
import type { ScannedBackup } from "../../gen/rbdbackup/v1/session";
import { volumeKey } from "../model";
import { parseRebuildMeta, type RebuildMeta } from "./meta";

/** Names of clusters this coordinator knows (its agents' registrations). */
export interface ClusterNames {
  nameOfFsid(fsid: string): string | undefined;
  fsidOfName(name: string): string | undefined;
}

export interface PlanInput {
  /** The scanned (backup) cluster: its name and the fsid its agent reported. */
  cluster: string;
  fsid: string;
  scanned: ScannedBackup[];
  /** The catalog's record of a backup id. */
  inCatalog(id: string): Backup | undefined;
  clusters: ClusterNames;
  now: Date;
}

/** The records of one chain (pool, namespace, base image), parents first. */
export interface ChainWrite {
  key: string;
  backups: Backup[];
}

export interface RebuildPlan {
  found: number;
  imported: RebuildFinding[];
  present: RebuildFinding[];
  skipped: RebuildFinding[];
  volumes: number;
  chains: ChainWrite[];
}

type Decision =
  | { kind: "present"; record: Backup }
  | { kind: "import"; record: Backup; depth: number }
  | { kind: "skip"; reason: string };

interface Entry {
  s: ScannedBackup;
  meta?: RebuildMeta;
  /** Set when the entry is skipped before any chain is looked at (parse, duplicate). */
  reason?: string;
  decision?: Decision;
  visiting?: boolean;
}

const where = (s: { pool: string; namespace: string }) => (s.namespace ? `${s.pool}/${s.namespace}` : s.pool);

/** The agent's words for an object or image it could not read (engine/scan-backups.ts objectError). */
const UNREADABLE = / could not be read: /;

function parse(s: ScannedBackup): Entry {
  if (s.metaError)
    return { s, reason: UNREADABLE.test(s.metaError) ? s.metaError : `meta object does not parse: ${s.metaError}` };
  try {
    return { s, meta: parseRebuildMeta(s.meta, s.backupId) };
  } catch (e) {
    return { s, reason: `meta object does not parse: ${(e as Error).message}` };
  }
}

/** Duplicate ids: kept only where the catalog already holds the backup; otherwise every copy is skipped. */
function markDuplicates(input: PlanInput, byId: Map<string, Entry[]>): void {
  for (const [id, list] of byId) {
    if (list.length < 2) continue;
    const places = list.map((e) => where(e.s)).join(", ");
    const held = input.inCatalog(id)?.location;
    const keep = list.find(
      (e) => held?.cluster === input.cluster && held.pool === e.s.pool && held.namespace === e.s.namespace,
    );
    for (const e of list) {
      if (e === keep) continue;
      e.reason = keep
        ? `backup id ${id} found in more than one place (${places}); the catalog holds it at ${where(keep.s)}`
        : `backup id ${id} found in more than one place (${places}): not imported (remove the stray copy, then rebuild again)`;
    }
  }
}

/** The source cluster's name: from the registered agents by fsid, else as the meta names it. */
function sourceCluster(
  input: PlanInput,
  src: Extract<RebuildMeta["source"], { kind: "rbd" }>,
): string | { reason: string } {
  const byFsid = src.fsid ? input.clusters.nameOfFsid(src.fsid) : undefined;
  if (byFsid) return byFsid;
  if (src.clusterName) {
    const pinned = input.clusters.fsidOfName(src.clusterName);
    if (pinned && src.fsid && pinned !== src.fsid) {
      return {
        reason: `source cluster ${src.clusterName} is registered here with fsid ${pinned}, the meta says ${src.fsid}`,
      };
    }
    return src.clusterName;
  }
  return {
    reason: `source cluster ${src.fsid || "(no fsid)"} cannot be named: no agent of it has registered with this coordinator and the meta object does not name it (start an agent of that cluster, then rebuild again)`,
  };
}

function record(input: PlanInput, e: Entry, m: RebuildMeta, volume: VolumeRef, more: string[]): Backup {
  const s = e.s;
  const warnings = [
    `rebuilt from backup.${s.backupId}.meta on ${input.cluster}/${where(s)} at ${input.now.toISOString()}`,
    ...more,
  ];
  if (s.digestsError)
    warnings.push(
      UNREADABLE.test(s.digestsError)
        ? `${s.digestsError}: no digest recorded`
        : `backup.${s.backupId}.digests is malformed (${s.digestsError}): no digest recorded`,
    );
  const integrity =
    s.digestsExists && s.digestsSha256
      ? BackupIntegrity.fromPartial({ imageDigest: s.digestsSha256, digestBlockSize: s.digestBlockSize })
      : undefined;
  return {
    id: m.backupId,
    volume,
    volumeId: m.volumeId,
    volumeMetadata: { ...m.volumeMetadata },
    location: { cluster: input.cluster, pool: s.pool, namespace: s.namespace },
    locationFsid: input.fsid,
    status: BackupStatus.BACKUP_STATUS_AVAILABLE,
    baseImage: m.baseImage,
    snapshot: m.snapshot,
    incremental: m.incremental,
    parentSnapshot: m.parentSnapshot,
    forcedFullReason: m.forcedFullReason,
    sizeBytes: m.sizeBytes,
    dataBytesSent: 0,
    zeroBytes: 0,
    transferSeconds: 0,
    jobId: "",
    createdAt: m.createdAt,
    completedAt: m.createdAt,
    error: "",
    warnings,
    clones: [],
    integrity,
    policy: "",
  };
}

const LOOP = "its chain loops back on itself";

/**
 * Where `e`'s parent stands: in the catalog or imported with it (its depth: -1 for the catalog's), or
 * why `e` cannot be imported (its parent on another base image, a loop). A parent that is gone — deleted
 * (retention and DeleteBackup remove a chain's older backups; their children stay restorable: a
 * restore reads the backup's own snapshot) or not importable itself — does not keep `e` out: `e` is
 * imported on its own (depth -1), with a warning saying so.
 */
function parentOf(
  input: PlanInput,
  byId: Map<string, Entry[]>,
  e: Entry,
  m: RebuildMeta,
): { depth: number; warning?: string } | { reason: string } {
  const held = input.inCatalog(m.parentId);
  if (held) {
    if (held.baseImage !== m.baseImage) {
      return { reason: `parent ${m.parentId} is on base image ${held.baseImage}, this backup on ${m.baseImage}` };
    }
    return { depth: -1 };
  }
  const alone = (why: string) => ({
    depth: -1,
    warning: `its parent backup ${m.parentId} ${why}: imported without it (a restore reads this backup's own snapshot)`,
  });
  const candidates = byId.get(m.parentId) ?? [];
  const p = candidates.find((c) => !c.reason) ?? candidates[0];
  if (!p) return alone("is neither in the catalog nor found (deleted)");
  const d = decide(input, byId, p);
  if (d.kind === "skip") return d.reason === LOOP ? { reason: LOOP } : alone(`is not imported (${d.reason})`);
  if (p.s.pool !== e.s.pool || p.s.namespace !== e.s.namespace || p.meta?.baseImage !== m.baseImage) {
    return { reason: `parent ${m.parentId} is in another chain (${where(p.s)} ${p.meta?.baseImage ?? ""})` };
  }
  return { depth: d.kind === "import" ? d.depth : -1 };
}

function decideOnce(input: PlanInput, byId: Map<string, Entry[]>, e: Entry): Decision {
  if (e.reason || !e.meta) return { kind: "skip", reason: e.reason ?? "meta object does not parse" };
  const m = e.meta;
  const held = input.inCatalog(m.backupId);
  if (held) return { kind: "present", record: held };
  if (m.source.kind === "path") {
    return {
      kind: "skip",
      reason: `its source is a file (${m.source.path}), not a volume: path backups are not catalogued`,
    };
  }
  if (!e.s.snapshotExists) {
    return { kind: "skip", reason: `snapshot ${m.snapshot} missing on base image ${where(e.s)}/${m.baseImage}` };
  }
  const cluster = sourceCluster(input, m.source);
  if (typeof cluster !== "string") return { kind: "skip", ...cluster };
  let depth = 0;
  const warnings: string[] = [];
  if (m.incremental) {
    const p = parentOf(input, byId, e, m);
    if ("reason" in p) return { kind: "skip", ...p };
    depth = p.depth + 1;
    if (p.warning) warnings.push(p.warning);
  }
  const { pool, namespace, image } = m.source;
  return { kind: "import", record: record(input, e, m, { cluster, pool, namespace, image }, warnings), depth };
}

function decide(input: PlanInput, byId: Map<string, Entry[]>, e: Entry): Decision {
  if (e.decision) return e.decision;
  if (e.visiting) return { kind: "skip", reason: LOOP };
  e.visiting = true;
  e.decision = decideOnce(input, byId, e);
  e.visiting = false;
  return e.decision;
}

const byPlace = (a: RebuildFinding, b: RebuildFinding) =>
  a.pool.localeCompare(b.pool) || a.namespace.localeCompare(b.namespace) || a.backupId.localeCompare(b.backupId);

/** The plan for one scan (see the module comment). */
export function planRebuild(input: PlanInput): RebuildPlan {
  const entries = input.scanned.map(parse);
  const byId = new Map<string, Entry[]>();
  for (const e of entries) {
    const list = byId.get(e.s.backupId);
    if (list) list.push(e);
    else byId.set(e.s.backupId, [e]);
  }
  markDuplicates(input, byId);
  const plan: RebuildPlan = { found: entries.length, imported: [], present: [], skipped: [], volumes: 0, chains: [] };
  const volumes = new Set<string>();
  const chains = new Map<string, Array<{ record: Backup; depth: number }>>();
  for (const e of entries) {
    const d = decide(input, byId, e);
    const finding: RebuildFinding = {
      backupId: e.s.backupId,
      pool: e.s.pool,
      namespace: e.s.namespace,
      volume: undefined,
      reason: d.kind === "skip" ? d.reason : "",
    };
    if (d.kind === "skip") {
      const src = e.meta?.source;
      if (src?.kind === "rbd") {
        const c = sourceCluster(input, src);
        finding.volume = {
          cluster: typeof c === "string" ? c : "",
          pool: src.pool,
          namespace: src.namespace,
          image: src.image,
        };
      }
      plan.skipped.push(finding);
      continue;
    }
    finding.volume = d.record.volume;
    if (d.record.volume) volumes.add(volumeKey(d.record.volume));
    if (d.kind === "present") {
      plan.present.push(finding);
      continue;
    }
    plan.imported.push(finding);
    const key = `${where(e.s)}/${d.record.baseImage}`;
    const chain = chains.get(key);
    if (chain) chain.push({ record: d.record, depth: d.depth });
    else chains.set(key, [{ record: d.record, depth: d.depth }]);
  }
  for (const [key, list] of [...chains].sort(([a], [b]) => a.localeCompare(b))) {
    list.sort(
      (a, b) => a.depth - b.depth || (a.record.createdAt?.getTime() ?? 0) - (b.record.createdAt?.getTime() ?? 0),
    );
    plan.chains.push({ key, backups: list.map((x) => x.record) });
  }
  plan.imported.sort(byPlace);
  plan.present.sort(byPlace);
  plan.skipped.sort(byPlace);
  plan.volumes = volumes.size;
  return plan;
}
