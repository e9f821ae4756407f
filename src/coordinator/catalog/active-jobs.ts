/**
 * The jobs that are QUEUED or RUNNING, in memory: the scheduler's tick (every second and on every
 * kick), the policy runner, the API's admission checks and the metrics scrape all ask for them, and
 * a query plus a parse of each row on every ask is what this saves (issue 15). A store is the only
 * writer of its jobs table: it loads the index once, on first use, keeps it in step in insertJob and
 * updateJob (the document it wrote), and drops it whenever a transaction throws (a rollback may undo
 * writes it saw), so the next read loads it again. A store shared by several coordinators (PostgreSQL)
 * must also drop it whenever this coordinator is granted leadership: a standby's copy is stale.
 *
 * What it hands out is parsed from the documents as written, fresh on each call: callers change the
 * records they get and write them back, as they did with records read from the rows.
 */
import { JobState } from "../../gen/rbdbackup/v1/backup_service";
import type { JobRecord } from "../model";

/** A job's row as the index keeps it: its creation time (the listing's order), its backup and the document written. */
export interface ActiveJobRow {
  id: string;
  createdAt: number;
  backupId: string;
  doc: string;
}

export const isActiveState = (s: JobState): boolean =>
  s === JobState.JOB_STATE_QUEUED || s === JobState.JOB_STATE_RUNNING;

/**
 * The backups a job's document says it uses: its own, and those of its backup locks (an EXPORT's
 * from-backup, an IMPORT's parent — scheduler/jobs.ts lockOfBackup, shared or not), read off the JSON
 * without parsing it. A lock is an element of the `locks` array: right after "[" or ",", a quote that no
 * string a user chose (an image name, escaped as \") can open.
 */
const BACKUP_LOCK = /(?<=[[,])"backup:([0-9a-f-]{36})(?:#shared)?"/g;
function usedBackups(backupId: string, doc: string): string[] {
  const ids = new Set<string>(backupId ? [backupId] : []);
  for (const m of doc.matchAll(BACKUP_LOCK)) ids.add(m[1] as string);
  return [...ids];
}

/** Oldest first: created_at, then id (as the rows' ORDER BY created_at, id; ids are ASCII). */
const byCreation = (a: ActiveJobRow, b: ActiveJobRow): number =>
  a.createdAt - b.createdAt || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);

export class ActiveJobIndex {
  /** id → row; undefined until loaded (or after invalidate()). */
  #byId: Map<string, ActiveJobRow> | undefined;
  /** The rows in order; undefined when a job came or went since it was sorted. */
  #ordered: ActiveJobRow[] | undefined;
  /** backup id → how many of the jobs use it (built with #byId). */
  #byBackup = new Map<string, number>();

  /** `load` returns the rows of every QUEUED or RUNNING job (called on first use and after invalidate()). */
  constructor(private readonly load: () => ActiveJobRow[]) {}

  invalidate(): void {
    this.#byId = undefined;
    this.#ordered = undefined;
    this.#byBackup = new Map();
  }

  /**
   * A job was inserted or updated with `doc` (call after the row is written). An update keeps the
   * creation time the row was inserted with, as the row's column does.
   */
  put(j: JobRecord, doc: string): void {
    const m = this.#byId;
    if (!m) return;
    const had = m.get(j.id);
    if (!isActiveState(j.state)) {
      if (had) {
        m.delete(j.id);
        for (const id of usedBackups(had.backupId, had.doc)) this.#unuse(id);
        this.#ordered = undefined;
      }
      return;
    }
    if (had) {
      for (const id of usedBackups(had.backupId, had.doc)) this.#unuse(id);
      had.doc = doc; // same row object in #ordered: its place does not change
      had.backupId = j.backupId;
      for (const id of usedBackups(had.backupId, doc)) this.#use(id);
      return;
    }
    m.set(j.id, { id: j.id, createdAt: j.createdAt, backupId: j.backupId, doc });
    for (const id of usedBackups(j.backupId, doc)) this.#use(id);
    this.#ordered = undefined;
  }

  /** Whether a QUEUED or RUNNING job uses the backup — as its own, or under one of its locks (no parse). */
  usesBackup(backupId: string): boolean {
    this.#index();
    return (this.#byBackup.get(backupId) ?? 0) > 0;
  }

  #use(backupId: string): void {
    this.#byBackup.set(backupId, (this.#byBackup.get(backupId) ?? 0) + 1);
  }

  #unuse(backupId: string): void {
    const n = (this.#byBackup.get(backupId) ?? 0) - 1;
    if (n > 0) this.#byBackup.set(backupId, n);
    else this.#byBackup.delete(backupId);
  }

  /** How many jobs are QUEUED or RUNNING. */
  get size(): number {
    return this.#index().size;
  }

  /** The job if it is QUEUED or RUNNING (a fresh record), else undefined. */
  get(id: string): JobRecord | undefined {
    const r = this.#index().get(id);
    return r ? (JSON.parse(r.doc) as JobRecord) : undefined;
  }

  /** Every QUEUED or RUNNING job, oldest first, each a fresh record. */
  all(): JobRecord[] {
    return this.#rows().map((r) => JSON.parse(r.doc) as JobRecord);
  }

  #rows(): ActiveJobRow[] {
    if (!this.#ordered) this.#ordered = [...this.#index().values()].sort(byCreation);
    return this.#ordered;
  }

  #index(): Map<string, ActiveJobRow> {
    if (!this.#byId) {
      const rows = this.load();
      this.#byId = new Map(rows.map((r) => [r.id, r]));
      this.#byBackup = new Map();
      for (const r of rows) for (const id of usedBackups(r.backupId, r.doc)) this.#use(id);
      this.#ordered = undefined;
    }
    return this.#byId;
  }
}
