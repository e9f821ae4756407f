/**
 * The destination's recovery journal: one small JSON file per transfer in progress, in the agent's
 * state directory, written (and fsync'ed) before the destination changes anything it would have to
 * undo. A transfer that ends (committed, or cleaned up) removes its entry; an entry found at start
 * means the agent died mid-transfer, and recovery undoes what that transfer left (sink/recovery.ts).
 */
import { mkdirSync } from "node:fs";
import { open, readdir, readFile, rename, rm } from "node:fs/promises";
import path from "node:path";

export interface JournalEntry {
  transferId: string;
  kind: number;
  pool: string;
  namespace: string;
  image: string;
  /** The destination created `image` in this transfer (it carries image-meta rbdbackup.incomplete=transferId). */
  createdImage: boolean;
  /** Incremental: the snapshot the base image's head must be rolled back to if the transfer did not commit. */
  rollbackTo?: string;
  /** The snapshot whose existence means the transfer committed. */
  toSnapshot?: string;
  backupId?: string;
  /** Address of the Ceph client (this agent's process) that ran the transfer. */
  clientAddr?: string;
  /** backup.<id>.meta was created by this transfer. */
  metaCreated?: boolean;
  startedAt: string;
  /** The source will retry if this transfer is cut short (TransferHeader.resumable): it checkpoints. */
  resumable?: boolean;
  /** Cut short with a checkpoint: kept for a retry to resume until then (ISO time), then undone. */
  heldUntil?: string;
}

/** The fields recovery relies on, with their types. */
function isEntry(e: unknown): e is JournalEntry {
  if (typeof e !== "object" || e === null) return false;
  const o = e as Record<string, unknown>;
  return (
    typeof o.transferId === "string" &&
    typeof o.kind === "number" &&
    typeof o.pool === "string" &&
    typeof o.namespace === "string" &&
    typeof o.image === "string" &&
    typeof o.createdImage === "boolean"
  );
}

/** The journal as the sink uses it (Journal on disk; an in-memory one in unit tests). */
export interface JournalStore {
  /** Writes (or replaces) an entry durably before it resolves. */
  write(e: JournalEntry): Promise<void>;
  /** Removes an entry; a missing one is fine. */
  remove(id: string): Promise<void>;
  list(): Promise<JournalEntry[]>;
}

export class Journal implements JournalStore {
  readonly dir: string;

  constructor(stateDir: string) {
    this.dir = path.join(stateDir, "transfers");
    mkdirSync(this.dir, { recursive: true, mode: 0o700 });
  }

  #file(id: string): string {
    return path.join(this.dir, `${id}.json`);
  }

  /** The file's data, then its name: the rename is durable only once the directory is synced too. */
  async write(e: JournalEntry): Promise<void> {
    const tmp = `${this.#file(e.transferId)}.tmp`;
    const fh = await open(tmp, "w", 0o600);
    try {
      await fh.writeFile(JSON.stringify(e));
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, this.#file(e.transferId));
    await this.#syncDir();
  }

  /**
   * Not synced: an entry that comes back after a power loss is one recovery checks again against the
   * cluster (the image's marker, the snapshot) before it undoes anything.
   */
  async remove(id: string): Promise<void> {
    await rm(this.#file(id), { force: true });
  }

  async #syncDir(): Promise<void> {
    const dh = await open(this.dir, "r");
    try {
      await dh.sync();
    } finally {
      await dh.close();
    }
  }

  /** The entries on disk; files that are unreadable or not an entry are skipped (recovery must start). */
  async list(): Promise<JournalEntry[]> {
    const out: JournalEntry[] = [];
    for (const f of await readdir(this.dir)) {
      if (!f.endsWith(".json")) continue;
      try {
        const e: unknown = JSON.parse(await readFile(path.join(this.dir, f), "utf8"));
        if (isEntry(e)) out.push(e);
      } catch {
        // A torn write of the tmp file never reaches *.json (rename is atomic); skip anything unreadable.
      }
    }
    return out;
  }
}
