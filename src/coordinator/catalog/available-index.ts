/**
 * The AVAILABLE backups of each volume, in memory: what the recovery point (the API's protection views,
 * the per-volume metrics), the last-success gauge and retention ask about every protected volume, so
 * that they cost a map lookup rather than reading and parsing every backup row of the volume (deleted
 * ones included) on each scrape. The catalog is the only writer of the backups table: it loads the
 * index once, on first use, keeps it in step in insertBackup/updateBackup, and drops it whenever a
 * transaction throws (a rollback may undo writes it saw), so the next read reloads it.
 */
import { type Backup, BackupStatus } from "../../gen/rbdbackup/v1/backup_service";
import type { BackupLocation } from "../../gen/rbdbackup/v1/common";

/** What the index keeps of an AVAILABLE backup. */
export interface AvailableBackup {
  id: string;
  /** Where it is (undefined only for a malformed record). */
  location: BackupLocation | undefined;
  /** Epoch ms; completedAt undefined when the record has none. */
  createdAt: number;
  completedAt: number | undefined;
  /** Backup.policy: the policy whose run made it ("" = not a policy's). */
  policy: string;
  /** How many RBD clones depend on its snapshot (Backup.clones). */
  clones: number;
}

interface Entry {
  volume: { cluster: string; pool: string; namespace: string; image: string };
  backups: Map<string, AvailableBackup>;
}

const volKey = (cluster: string, pool: string, namespace: string, image: string): string =>
  `${cluster}\0${pool}\0${namespace}\0${image}`;

export class AvailableIndex {
  /** volume key → the volume and its backups by id; undefined until loaded (or after a rollback). */
  #byVolume: Map<string, Entry> | undefined;
  /** backup id → volume key, for updates that move a backup out of AVAILABLE. */
  #volumeOf = new Map<string, string>();

  /** `load` returns every AVAILABLE backup (called on first use and after invalidate()). */
  constructor(private readonly load: () => Backup[]) {}

  invalidate(): void {
    this.#byVolume = undefined;
    this.#volumeOf = new Map();
  }

  /** A backup was inserted or updated (call after the row is written). */
  put(b: Backup): void {
    if (!this.#byVolume) return;
    const old = this.#volumeOf.get(b.id);
    if (old !== undefined) {
      const e = this.#byVolume.get(old);
      e?.backups.delete(b.id);
      // A volume whose last AVAILABLE backup went leaves the index (volumes come and go for years).
      if (e?.backups.size === 0) this.#byVolume.delete(old);
      this.#volumeOf.delete(b.id);
    }
    if (b.status === BackupStatus.BACKUP_STATUS_AVAILABLE) this.#add(this.#byVolume, b);
  }

  /** The AVAILABLE backups of a volume, oldest first (createdAt, then id). */
  of(cluster: string, pool: string, namespace: string, image: string): AvailableBackup[] {
    const m = this.#index().get(volKey(cluster, pool, namespace, image))?.backups;
    if (!m?.size) return [];
    return [...m.values()].sort((a, b) => a.createdAt - b.createdAt || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  }

  /** Every volume with an AVAILABLE backup that has a completion time: the newest completion. */
  lastSuccessByVolume(): Array<{ cluster: string; pool: string; namespace: string; image: string; at: number }> {
    const out: Array<{ cluster: string; pool: string; namespace: string; image: string; at: number }> = [];
    for (const { volume, backups } of this.#index().values()) {
      let at: number | undefined;
      for (const b of backups.values())
        if (b.completedAt !== undefined && (at === undefined || b.completedAt > at)) at = b.completedAt;
      if (at !== undefined) out.push({ ...volume, at });
    }
    return out;
  }

  /** How many volumes have an AVAILABLE backup (loads the index). */
  get volumes(): number {
    return this.#index().size;
  }

  #index(): Map<string, Entry> {
    if (!this.#byVolume) {
      const idx = new Map<string, Entry>();
      this.#volumeOf = new Map();
      for (const b of this.load()) if (b.status === BackupStatus.BACKUP_STATUS_AVAILABLE) this.#add(idx, b);
      this.#byVolume = idx;
    }
    return this.#byVolume;
  }

  #add(idx: Map<string, Entry>, b: Backup): void {
    const v = b.volume ?? { cluster: "", pool: "", namespace: "", image: "" };
    const key = volKey(v.cluster, v.pool, v.namespace, v.image);
    let e = idx.get(key);
    if (!e) {
      e = { volume: { cluster: v.cluster, pool: v.pool, namespace: v.namespace, image: v.image }, backups: new Map() };
      idx.set(key, e);
    }
    e.backups.set(b.id, availableOf(b));
    this.#volumeOf.set(b.id, key);
  }
}

/** What the index keeps of an AVAILABLE backup (also what a store without the index answers from SQL). */
export function availableOf(b: Backup): AvailableBackup {
  return {
    id: b.id,
    location: b.location ? { ...b.location } : undefined,
    createdAt: b.createdAt?.getTime() ?? 0,
    completedAt: b.completedAt?.getTime(),
    policy: b.policy,
    clones: b.clones.length,
  };
}
