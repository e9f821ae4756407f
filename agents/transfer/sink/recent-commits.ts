/**
 * Backups this agent's sink committed moments ago, for the coordinator's confirmation (confirm_backup,
 * agents/agent/calls.ts). Its questions — is the snapshot on the base image, is backup.<id>.meta there —
 * used to start only once the source had reported; now the committing handle lists the snapshot right
 * after the commit, after the summary went back to the source (which reports meanwhile), and then
 * closes (run-sink.ts settleCommitted); the metadata is the bytes the commit wrote. The answer is
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
  /** Settles once the committing handle is closed and the transfer's journal entry gone (never rejects). */
  settled: Promise<unknown>;
}

/** How long a commit answers confirmations (ms): the coordinator asks within seconds of the report. */
export const RECENT_COMMIT_TTL_MS = 120_000;

export class RecentCommits {
  readonly #entries = new Map<string, RecentCommit & { at: number }>();
  /** Listings and closings still running after their summaries (the agent's stop waits for them). */
  readonly #pending = new Set<Promise<unknown>>();

  constructor(
    readonly ttlMs = RECENT_COMMIT_TTL_MS,
    readonly max = 1024,
    private readonly now: () => number = Date.now,
  ) {}

  /**
   * `snapshot` settles once the snapshot was listed (it never rejects: null when that failed); `settled`
   * once the commit's handle is closed (it never rejects either; default: with the listing).
   */
  record(
    backupId: string,
    committed: CommittedBackup,
    snapshot: Promise<BackupSnapshot | null>,
    settled: Promise<unknown> = snapshot,
  ): void {
    this.#entries.delete(backupId);
    this.#entries.set(backupId, { at: this.now(), committed, snapshot, settled });
    while (this.#entries.size > this.max) this.#entries.delete(this.#entries.keys().next().value as string);
    for (const p of new Set([snapshot, settled])) {
      this.#pending.add(p);
      void p.finally(() => this.#pending.delete(p));
    }
  }

  /**
   * Resolves once the commit of `backupId` (if recorded) has closed its handle, or after `ms`: a delete of
   * that backup by this agent does not meet the committing handle still open.
   */
  async settled(backupId: string, ms: number): Promise<void> {
    const e = this.#entries.get(backupId);
    if (e) await withinMs(e.settled, ms);
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

  /** Resolves once no listing or closing is in flight, or after `ms` (the agent's stop, before the cluster closes). */
  async idle(ms: number): Promise<void> {
    if (this.#pending.size === 0) return;
    await withinMs(Promise.allSettled([...this.#pending]), ms);
  }
}

/** Waits for `p` (its failure ignored), at most `ms`. */
async function withinMs(p: Promise<unknown>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([
    p.catch(() => {}),
    new Promise((resolve) => {
      timer = setTimeout(resolve, ms);
    }),
  ]);
  clearTimeout(timer);
}
