/**
 * Destination checkpoints of a resumable transfer (TransferHeader.resumable): how far the image is
 * known to be written, kept in the image's own image-meta (`rbdbackup.resume`, JSON) so that it
 * travels with the image and survives the agent.
 *
 * A checkpoint is taken at a record boundary, at most every `everyBytes` of records received (data and
 * zero bytes: the work a resume saves — not image offset, so a sparse image or a small incremental spread
 * over a large one takes none it does not need) or `everyMs` (whichever comes first): the digest of the records so far (a copy of the running hash)
 * and the counts are captured there, then — without stopping the receive loop — every write started
 * up to that record is awaited, the image flushed, and only then the record written. So a checkpoint
 * claims only bytes that are on disk. One checkpoint runs at a time; a failed one is only a warning
 * (the transfer goes on, a retry resumes from an older one or starts over).
 */
import type { Logger } from "../../../src/common/log";
import type { TransferHeader } from "../../../src/gen/rbdbackup/v1/transfer";
import type { SinkImage } from "./ports";

/** image-meta key of a resumable transfer's checkpoint. */
export const RESUME_KEY = "rbdbackup.resume";

export const DEFAULT_CHECKPOINT_BYTES = 64 * 1024 * 1024;
export const DEFAULT_CHECKPOINT_MS = 5000;

/** What the records before a checkpoint added up to (the trailer's totals include them). */
export interface Counts {
  dataChunks: number;
  dataBytes: number;
  zeroRanges: number;
  zeroBytes: number;
}

/** Where a resumed transfer starts: the records before `offset` are on disk. */
export interface ResumeBase {
  offset: number;
  prefixDigest: Buffer;
  counts: Counts;
}

/** The JSON kept under RESUME_KEY. */
export interface CheckpointRecord {
  v: 1;
  /** The attempt that wrote it (its journal entry's id). */
  transferId: string;
  kind: number;
  backupId: string;
  fromSnapshot: string;
  toSnapshot: string;
  imageSize: number;
  offset: number;
  /** Lowercase hex SHA-256: the prefix digest of transfer.proto. */
  prefixDigest: string;
  counts: Counts;
  at: string;
}

export function checkpointRecord(h: TransferHeader, transferId: string, base: ResumeBase): CheckpointRecord {
  return {
    v: 1,
    transferId,
    kind: h.kind,
    backupId: h.backupId,
    fromSnapshot: h.fromSnapshot,
    toSnapshot: h.toSnapshot,
    imageSize: h.imageSize,
    offset: base.offset,
    prefixDigest: base.prefixDigest.toString("hex"),
    counts: { ...base.counts },
    at: new Date().toISOString(),
  };
}

/** The bytes of records a checkpoint's counts stand for. */
const workOf = (c: Counts) => c.dataBytes + c.zeroBytes;

const isCount = (n: unknown): n is number => Number.isSafeInteger(n) && (n as number) >= 0;

/** Parses a stored checkpoint; null when absent or not one we wrote (never trusted blindly). */
export function parseCheckpoint(text: string | null): CheckpointRecord | null {
  if (!text) return null;
  try {
    const r = JSON.parse(text) as CheckpointRecord;
    const c = r.counts;
    if (
      r.v !== 1 ||
      typeof r.transferId !== "string" ||
      !isCount(r.kind) ||
      typeof r.backupId !== "string" ||
      typeof r.fromSnapshot !== "string" ||
      typeof r.toSnapshot !== "string" ||
      !isCount(r.imageSize) ||
      !isCount(r.offset) ||
      r.offset === 0 ||
      r.offset > r.imageSize ||
      !/^[0-9a-f]{64}$/.test(r.prefixDigest) ||
      !c ||
      ![c.dataChunks, c.dataBytes, c.zeroRanges, c.zeroBytes].every(isCount)
    )
      return null;
    return r;
  } catch {
    return null;
  }
}

/** Why `h` cannot resume from `r` ("" when it can): the same kind, backup, snapshots and size. */
export function mismatch(h: TransferHeader, r: CheckpointRecord): string {
  if (r.kind !== h.kind) return `the checkpoint is of a transfer of kind ${r.kind}, not ${h.kind}`;
  if (r.backupId !== h.backupId) return `the checkpoint belongs to backup ${r.backupId}`;
  if (r.fromSnapshot !== h.fromSnapshot || r.toSnapshot !== h.toSnapshot) {
    return `the checkpoint is of ${r.fromSnapshot || "(start)"} → ${r.toSnapshot || "(restore)"}, not ${h.fromSnapshot || "(start)"} → ${h.toSnapshot || "(restore)"}`;
  }
  if (r.imageSize !== h.imageSize) return `the checkpoint is for an image of ${r.imageSize} bytes, not ${h.imageSize}`;
  return "";
}

export function baseOf(r: CheckpointRecord): ResumeBase {
  return { offset: r.offset, prefixDigest: Buffer.from(r.prefixDigest, "hex"), counts: { ...r.counts } };
}

/** What the checkpointer reads at a record boundary. */
export interface Progress {
  prefixDigest(): Buffer;
  counts(): Counts;
}

export interface CheckpointOptions {
  everyBytes: number;
  everyMs: number;
}

/** Takes a resumable transfer's checkpoints as records arrive (see the module comment). */
export class Checkpointer {
  /** Data + zero bytes received when the last checkpoint was taken. */
  #lastWork: number;
  #lastAt = Date.now();
  #running: Promise<void> | null = null;
  /** The newest checkpoint on disk (null: none yet — a transfer cut short now cleans up). */
  written: CheckpointRecord | null = null;

  constructor(
    readonly h: TransferHeader,
    readonly image: Pick<SinkImage, "flush" | "metaSet">,
    /** Resolves once every write started so far is done; false when one failed. */
    readonly barrier: () => Promise<boolean>,
    readonly progress: Progress,
    readonly opts: CheckpointOptions,
    readonly log: Logger,
    /** A resumed transfer's starting point: the checkpoint it took over. */
    resumedFrom: CheckpointRecord | null = null,
  ) {
    this.written = resumedFrom;
    this.#lastWork = resumedFrom ? workOf(resumedFrom.counts) : 0;
  }

  /** Called after each record (ending at `end`) was handed to the write window. */
  after(end: number): void {
    if (this.#running) return;
    const counts = this.progress.counts();
    const work = workOf(counts);
    if (work - this.#lastWork < this.opts.everyBytes && Date.now() - this.#lastAt < this.opts.everyMs) return;
    const rec = checkpointRecord(this.h, this.h.transferId, {
      offset: end,
      prefixDigest: this.progress.prefixDigest(),
      counts,
    });
    this.#lastWork = work;
    this.#lastAt = Date.now();
    this.#running = this.#take(rec).finally(() => {
      this.#running = null;
    });
  }

  /** Writes `rec` as the checkpoint now (a resumed transfer re-labels the one it took over). */
  async write(rec: CheckpointRecord): Promise<void> {
    await this.image.metaSet(RESUME_KEY, JSON.stringify(rec));
    this.written = rec;
  }

  async #take(rec: CheckpointRecord): Promise<void> {
    try {
      if (!(await this.barrier())) return; // a write failed: the transfer fails, this is no progress
      await this.image.flush();
      await this.write(rec);
      this.log.debug("checkpoint", { offset: rec.offset });
    } catch (e) {
      this.log.warn("could not write a checkpoint (a retry resumes from an earlier one)", { err: e });
    }
  }

  /** Waits for a checkpoint in progress (never rejects). */
  async idle(): Promise<void> {
    await this.#running;
  }
}
