/**
 * The destination's recovery journal: one small JSON file per transfer in progress, in the agent's
 * state directory, written (and fsync'ed) before the destination changes anything it would have to
 * undo. A transfer that ends (committed, or cleaned up) removes its entry; an entry found at start
 * means the agent died mid-transfer, and recovery undoes what that transfer left (sink/recovery.ts).
 * Each file says its format (`format`; none: 1). One this release cannot read — another release's
 * format, a torn or foreign file — is left where it is and said once per process (a warning naming the
 * file and, when readable, its image; again after a restart): what it describes is neither undone nor
 * forgotten in silence. An entry removed between the directory's listing and its read (its transfer
 * just ended) is simply gone.
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

/** The entries' format this release writes and reads. */
export const JOURNAL_FORMAT = 1;

/** A file `list()` leaves alone, and why (the log says it). */
export type SkippedFile = { file: string; reason: string; image?: string };

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
  readonly #onSkipped: (s: SkippedFile) => void;
  /** Files already told to onSkipped (each once). */
  readonly #told = new Set<string>();

  /** `onSkipped`: told of each file a listing leaves alone, once (the agent logs a warning). */
  constructor(stateDir: string, onSkipped: (s: SkippedFile) => void = () => {}) {
    this.#onSkipped = onSkipped;
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
      await fh.writeFile(JSON.stringify({ format: JOURNAL_FORMAT, ...e }));
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

  /**
   * The entries on disk. A file that is unreadable, not an entry, or of another format is left alone and
   * told to `onSkipped` (recovery must start either way). A leftover `.tmp` (a write cut short before
   * its rename) is not an entry and is not told.
   */
  async list(): Promise<JournalEntry[]> {
    const out: JournalEntry[] = [];
    for (const f of await readdir(this.dir)) {
      if (!f.endsWith(".json")) continue;
      const file = path.join(this.dir, f);
      const skip = (s: SkippedFile) => {
        if (this.#told.has(file)) return;
        this.#told.add(file);
        this.#onSkipped(s);
      };
      let text: string;
      try {
        text = await readFile(file, "utf8");
      } catch (err) {
        // Removed since the directory was read: its transfer ended (committed, or cleaned up).
        if ((err as NodeJS.ErrnoException).code === "ENOENT") continue;
        skip({ file, reason: `unreadable (${(err as Error).message})` });
        continue;
      }
      let e: unknown;
      try {
        e = JSON.parse(text);
      } catch (err) {
        skip({ file, reason: `unreadable (${(err as Error).message})` });
        continue;
      }
      const o = (typeof e === "object" && e !== null ? e : {}) as Record<string, unknown>;
      const image = typeof o.pool === "string" && typeof o.image === "string" ? `${o.pool}/${o.image}` : undefined;
      const format = o.format ?? 1;
      if (format !== JOURNAL_FORMAT) {
        skip({
          file,
          reason: `format ${JSON.stringify(format)}, not ${JOURNAL_FORMAT} (another release's)`,
          ...(image ? { image } : {}),
        });
      } else if (!isEntry(e)) {
        skip({ file, reason: "not a journal entry", ...(image ? { image } : {}) });
      } else {
        const { format: _, ...entry } = e as JournalEntry & { format?: number };
        out.push(entry);
      }
    }
    return out;
  }
}
