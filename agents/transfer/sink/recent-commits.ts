/**
 * Backups this agent's sink committed moments ago — the snapshot Ceph acknowledged on the base image
 * (with its id and size, listed on the same handle before it closed) and the metadata object's exact
 * bytes. The coordinator's confirmation of such a backup (confirm_backup, agents/agent/calls.ts) is
 * answered from here instead of opening the base image and reading the object back: the same facts,
 * seen by the same agent of the destination cluster that wrote them, without the round trips. Anything
 * else — another backup, another image or snapshot than recorded, an entry older than the TTL, another
 * agent of the cluster asked — reads Ceph as before. Bounded: at most `max` entries, oldest dropped.
 * An entry goes when this agent removes the backup's data (forget).
 */
import { parseBackupSnap } from "../../../src/common/ids";
import type { BackupSnapshot } from "../../../src/gen/rbdbackup/v1/transfer";
import type { SnapInfo } from "../../ceph";

export interface CommittedBackup {
  pool: string;
  namespace: string;
  baseImage: string;
  snapshot: BackupSnapshot;
  /** backup.<id>.meta's bytes as written. */
  metadata: Uint8Array;
}

/** How long a commit answers confirmations (ms): the coordinator asks within seconds of the report. */
export const RECENT_COMMIT_TTL_MS = 120_000;

export class RecentCommits {
  readonly #entries = new Map<string, { at: number; c: CommittedBackup }>();

  constructor(
    readonly ttlMs = RECENT_COMMIT_TTL_MS,
    readonly max = 1024,
    private readonly now: () => number = Date.now,
  ) {}

  record(backupId: string, c: CommittedBackup): void {
    this.#entries.delete(backupId);
    this.#entries.set(backupId, { at: this.now(), c });
    while (this.#entries.size > this.max) this.#entries.delete(this.#entries.keys().next().value as string);
  }

  /** The commit of `backupId` on exactly that image and snapshot, if recorded within the TTL. */
  find(backupId: string, image: { pool: string; namespace: string; image: string }, snapshot: string) {
    const e = this.#entries.get(backupId);
    if (!e) return undefined;
    if (this.now() - e.at > this.ttlMs) {
      this.#entries.delete(backupId);
      return undefined;
    }
    const c = e.c;
    const same =
      c.pool === image.pool &&
      c.namespace === image.namespace &&
      c.baseImage === image.image &&
      c.snapshot.name === snapshot &&
      c.snapshot.backupId === backupId;
    return same ? c : undefined;
  }

  /** This agent removed the backup's data (or its base image): confirmations read Ceph again. */
  forget(backupId: string): void {
    this.#entries.delete(backupId);
  }

  /** Every entry of the base image goes (its removal). */
  forgetImage(pool: string, namespace: string, baseImage: string): void {
    for (const [id, e] of this.#entries) {
      if (e.c.pool === pool && e.c.namespace === namespace && e.c.baseImage === baseImage) this.#entries.delete(id);
    }
  }

  get size(): number {
    return this.#entries.size;
  }
}

/** A listed snapshot as a backup snapshot (null: its name is not a backup snapshot's). */
export function backupSnapshotOf(s: SnapInfo): BackupSnapshot | null {
  const p = parseBackupSnap(s.name);
  return p ? { name: s.name, backupId: p.backupId, timestamp: p.timestamp, snapId: s.id, size: s.size } : null;
}
