/**
 * Transfer streams for sink tests: a valid header, chunks with their CRC-32C, zero ranges and the
 * trailer with the digest — built with the protocol's own TransferDigest — plus a feed that can hold
 * the stream open at a chosen point (to cancel or fail a transfer mid-way, without timers).
 */
import { randomUUID } from "node:crypto";
import { TransferDigest } from "../../../../agents/transfer/protocol";
import { RELEASE, type Releasable } from "../../../../agents/transfer/wire";
import { type TransferHeader, TransferKind, type TransferMessage } from "../../../../src/gen/rbdbackup/v1/transfer";
import { crc32c } from "./crc32c";

export const KiB = 1024;

export function header(over: Partial<TransferHeader> = {}): TransferHeader {
  const h = baseHeader(over);
  const backup = h.kind === TransferKind.BACKUP_FULL || h.kind === TransferKind.BACKUP_INCREMENTAL;
  if (over.metadataJson || !backup) return h;
  // The metadata object names what the stream writes (validateHeader checks it).
  const chain = { base_image: h.destination?.image, snapshot: h.toSnapshot };
  return { ...h, metadataJson: Buffer.from(JSON.stringify({ version: 1, backup_id: h.backupId, chain })) };
}

function baseHeader(over: Partial<TransferHeader>): TransferHeader {
  const backupId = randomUUID();
  const kind = over.kind ?? TransferKind.BACKUP_FULL;
  const backup = kind === TransferKind.BACKUP_FULL || kind === TransferKind.BACKUP_INCREMENTAL;
  return {
    transferId: randomUUID(),
    resumeOffset: 0,
    resumePrefixDigest: new Uint8Array(0),
    resumable: false,
    allowOpen: false,
    compression: 0,
    jobId: "",
    kind,
    destination: { pool: "backups", namespace: "", image: `vol.backup.${backupId}` },
    fromSnapshot: "",
    toSnapshot: backup ? `backup.${backupId}.snap.1` : "",
    imageSize: 256 * KiB,
    features: 0,
    order: 0,
    stripeUnit: 0,
    stripeCount: 0,
    imageMeta: {},
    backupId: backup ? backupId : "",
    metadataJson: backup ? Buffer.from(`{"version":1,"backup_id":"${backupId}"}`) : Buffer.alloc(0),
    expectedFsid: "",
    chunkSize: 64 * KiB,
    ...over,
  };
}

export type Part = { offset: number; data: Buffer } | { offset: number; zero: number };

/** Deterministic non-zero bytes. */
export function pattern(length: number, seed: number): Buffer {
  const b = Buffer.alloc(length);
  for (let i = 0; i < length; i++) b[i] = ((i * 31 + seed * 17) % 251) + 1;
  return b;
}

export interface Released {
  /** Per chunk index: how many times its buffer was released. */
  counts: number[];
}

/**
 * header, parts, trailer. Each chunk's data is its own copy, with a RELEASE callback that counts the
 * release and scribbles over the buffer (so a write that reads it after its release writes garbage).
 * `corrupt`: the data chunk (0-based) whose bytes change after the checksum was taken.
 */
export function messages(
  h: TransferHeader,
  parts: Part[],
  o: { corrupt?: number; released?: Released; trailer?: "none" | "wrong-digest" } = {},
): TransferMessage[] {
  const digest = new TransferDigest();
  const out: TransferMessage[] = [{ body: { $case: "header", value: h } }];
  let chunks = 0;
  let dataBytes = 0;
  let zeroRanges = 0;
  let zeroBytes = 0;
  for (const p of parts) {
    if ("zero" in p) {
      digest.zero(p.offset, p.zero);
      zeroRanges++;
      zeroBytes += p.zero;
      out.push({ body: { $case: "zero", value: { offset: p.offset, length: p.zero } } });
      continue;
    }
    const data = Buffer.from(p.data);
    const crc = crc32c(data);
    digest.chunk(p.offset, data.length, crc);
    const i = chunks++;
    dataBytes += data.length;
    if (o.corrupt === i) data[0] = (data[0] ?? 0) ^ 0xff;
    const m: Releasable = {
      body: { $case: "chunk", value: { offset: p.offset, data, crc32: crc, compression: 0, rawLength: 0 } },
    };
    if (o.released) {
      const counts = o.released.counts;
      counts[i] = 0;
      m[RELEASE] = () => {
        counts[i] = (counts[i] ?? 0) + 1;
        data.fill(0xee);
      };
    }
    out.push(m);
  }
  if (o.trailer !== "none") {
    const d = digest.digest();
    if (o.trailer === "wrong-digest") d[0] = (d[0] ?? 0) ^ 1;
    out.push({
      body: { $case: "trailer", value: { dataChunks: chunks, dataBytes, zeroRanges, zeroBytes, digest: d } },
    });
  }
  return out;
}

/** `count` chunks of `size` bytes from offset 0, distinct data each. */
export function chunkParts(count: number, size: number): Part[] {
  return Array.from({ length: count }, (_, i) => ({ offset: i * size, data: pattern(size, i + 1) }));
}

/**
 * The messages as a stream; with `holdAfter`, the stream stops after that many messages until
 * `release()` — then ends (`after: "end"`, like a source that gave up) or never ends ("hang").
 */
export class Feed implements AsyncIterable<TransferMessage> {
  #release!: () => void;
  readonly #held = new Promise<void>((r) => {
    this.#release = r;
  });
  #reachedHold!: () => void;
  /** Resolves once the stream is held (the sink took everything before the hold). */
  readonly held = new Promise<void>((r) => {
    this.#reachedHold = r;
  });

  constructor(
    readonly msgs: TransferMessage[],
    readonly o: { holdAfter?: number; after?: "end" | "hang" } = {},
  ) {}

  release(): void {
    this.#release();
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<TransferMessage> {
    for (let i = 0; i < this.msgs.length; i++) {
      if (i === this.o.holdAfter) {
        this.#reachedHold();
        if (this.o.after === "hang") await new Promise(() => {});
        await this.#held;
        return;
      }
      yield this.msgs[i] as TransferMessage;
    }
  }
}
