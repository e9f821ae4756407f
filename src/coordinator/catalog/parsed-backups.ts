/**
 * Backup records parsed once per document (issue 13, per-backup cost): a scheduled backup and its
 * retention delete read the same few backup rows a dozen times (the lease, the outcome, the
 * confirmation, the snapshot sweep, retention), and `BackupMsg.fromJSON(JSON.parse(doc))` of each
 * read was most of what those reads cost. The SQLite catalog (the only writer of its rows) keeps the
 * last document it wrote or read for an id here and parses it on first use; a read whose row carries
 * the same document gets a copy of that parse instead of a new one. Keyed by the document text, so a
 * stale entry can never answer: a row read with another document replaces it. Cleared on rollback
 * (an entry may hold an undone write), bounded (oldest entries dropped first).
 *
 * What it hands out is a fresh record each time (copyBackup: nested messages, arrays, the metadata map
 * and the Dates copied), as a parse would be: callers change the records they get and write them back.
 */
import { Backup as BackupMsg } from "../../gen/rbdbackup/v1/backup_service";
import type { Backup } from "../model";

const MAX_ENTRIES = 8192;

const parseBackup = (doc: string): Backup => BackupMsg.fromJSON(JSON.parse(doc));

const copyDate = (d: Date | undefined): Date | undefined => (d ? new Date(d.getTime()) : undefined);

/** A deep copy of a parsed record (fromPartial copies every nested message and array; the Dates here). */
export function copyBackup(b: Backup): Backup {
  const c = BackupMsg.fromPartial(b);
  c.createdAt = copyDate(b.createdAt);
  c.completedAt = copyDate(b.completedAt);
  if (c.integrity && b.integrity) c.integrity.lastVerifiedAt = copyDate(b.integrity.lastVerifiedAt);
  return c;
}

export class ParsedBackups {
  /** id → the document last seen for it and, once read, its parse. */
  #byId = new Map<string, { doc: string; parsed: Backup | undefined }>();

  /** The row of `id` was written with `doc` (parsed when first read). */
  wrote(id: string, doc: string): void {
    this.#byId.delete(id);
    this.#set(id, { doc, parsed: undefined });
  }

  /** The record of a row read as (`id`, `doc`): a copy of the kept parse when the document is the same. */
  read(id: string, doc: string): Backup {
    let e = this.#byId.get(id);
    if (!e || e.doc !== doc) {
      e = { doc, parsed: undefined };
      this.#byId.delete(id);
      this.#set(id, e);
    }
    if (!e.parsed) e.parsed = parseBackup(doc);
    return copyBackup(e.parsed);
  }

  clear(): void {
    this.#byId = new Map();
  }

  get size(): number {
    return this.#byId.size;
  }

  #set(id: string, e: { doc: string; parsed: Backup | undefined }): void {
    if (this.#byId.size >= MAX_ENTRIES) {
      const oldest = this.#byId.keys().next();
      if (!oldest.done) this.#byId.delete(oldest.value);
    }
    this.#byId.set(id, e);
  }
}
