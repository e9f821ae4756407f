/**
 * Backups this agent's sink committed moments ago, for the coordinator's confirmation (confirm_backup,
 * agents/agent/calls.ts). Its questions — is the snapshot on the base image, is backup.<id>.meta there —
 * used to start only once the source had reported; now the listing starts right at the commit, through
 * a read-only handle of its own (the transfer does not wait for it: the summary goes back to the source,
 * which prunes and reports meanwhile), and the metadata is the bytes the commit wrote. The answer is
 * the same facts, read from the same cluster by the same agent, ready when the question comes. Anything
 * else — another backup, image or snapshot than recorded, an entry older than the TTL, a listing that
 * failed or did not show the snapshot, another agent of the cluster asked — reads Ceph as before.
 * Bounded: at most `max` entries, oldest dropped; an entry goes when this agent deletes the backup.
 */
import type { BackupSnapshot } from "../../../src/gen/rbdbackup/v1/transfer";

export interface CommittedBackup {
  pool: string;
  namespace: string;
  baseImage: string;
  /** The snapshot the commit made. */
  snapshotName: string;
  /** backup.<id>.meta's bytes as written. */
  metadata: Uint8Array;
}

/** A commit, and its snapshot as listed after it (null: the listing failed or did not show it). */
export interface RecentCommit {
  committed: CommittedBackup;
  snapshot: Promise<BackupSnapshot | null>;
}

/** How long a commit answers confirmations (ms): the coordinator asks within seconds of the report. */
export const RECENT_COMMIT_TTL_MS = 120_000;

export class RecentCommits {
  readonly #entries = new Map<string, RecentCommit & { at: number }>();
  readonly #listing = new Set<Promise<unknown>>();

  constructor(
    readonly ttlMs = RECENT_COMMIT_TTL_MS,
    readonly max = 1024,
    private readonly now: () => number = Date.now,
  ) {}

  /** `snapshot` settles once the snapshot was listed (it never rejects: null when that failed). */
  record(backupId: string, committed: CommittedBackup, snapshot: Promise<BackupSnapshot | null>): void {
    this.#entries.delete(backupId);
    this.#entries.set(backupId, { at: this.now(), committed, snapshot });
    while (this.#entries.size > this.max) this.#entries.delete(this.#entries.keys().next().value as string);
    this.#listing.add(snapshot);
    void snapshot.finally(() => this.#listing.delete(snapshot));
  }

  /** The commit of `backupId` on exactly that image and snapshot, if recorded within the TTL. */
  find(
    backupId: string,
    image: { pool: string; namespace: string; image: string },
    snapshot: string,
  ): RecentCommit | undefined {
    const e = this.#entries.get(backupId);
    if (!e) return undefined;
    if (this.now() - e.at > this.ttlMs) {
      this.#entries.delete(backupId);
      return undefined;
    }
    const c = e.committed;
    const same =
      c.pool === image.pool &&
      c.namespace === image.namespace &&
      c.baseImage === image.image &&
      c.snapshotName === snapshot;
    return same ? e : undefined;
  }

  /** This agent removed the backup's data: confirmations read Ceph again. */
  forget(backupId: string): void {
    this.#entries.delete(backupId);
  }

  get size(): number {
    return this.#entries.size;
  }

  /** Resolves once no listing is in flight, or after `ms` (the agent's stop, before the cluster closes). */
  async idle(ms: number): Promise<void> {
    if (this.#listing.size === 0) return;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      Promise.allSettled([...this.#listing]),
      new Promise((resolve) => {
        timer = setTimeout(resolve, ms);
      }),
    ]);
    clearTimeout(timer);
  }
}
