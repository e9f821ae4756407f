/**
 * A transfer's message stream (the transfer source's chunks and zero ranges, read from a snapshot's
 * diff with its read window) as the bytes of an `rbd export-diff` stream, in messages of at most
 * `maxMessage` bytes: small record headers are gathered, data goes out as slices of the read buffers
 * (no copy). The consumer pulls, so the reads run only as far ahead as it makes room for.
 */
import type { TransferMessage } from "../../../src/gen/rbdbackup/v1/transfer";
import type { DiffVersion } from "./format";
import { RbdDiffWriter } from "./writer";

/** Pieces below this are gathered into one message with their neighbours. */
const GATHER_BYTES = 64 * 1024;

export interface DiffStreamInfo {
  version: DiffVersion;
  fromSnapshot: string;
  toSnapshot: string;
  size: number;
}

/** Everything after the transfer's header; the trailer ends the stream with 'e'. */
export async function* transferToDiff(
  messages: AsyncIterable<TransferMessage>,
  info: DiffStreamInfo,
  maxMessage: number,
): AsyncGenerator<Buffer> {
  const w = new RbdDiffWriter(info.version);
  const out = new Batcher(maxMessage);
  yield* out.add(w.begin({ fromSnapshot: info.fromSnapshot, toSnapshot: info.toSnapshot, size: info.size }));
  for await (const m of messages) {
    const b = m.body;
    if (b?.$case === "chunk") yield* out.add(w.data(b.value.offset, b.value.data));
    else if (b?.$case === "zero") yield* out.add(w.zero(b.value.offset, b.value.length));
    else if (b?.$case === "trailer") yield* out.add(w.end());
  }
  if (!w.ended) throw new Error("the diff reader stopped before its end");
  yield* out.flush();
}

/** Gathers small pieces; slices large ones to at most `max` bytes. */
class Batcher {
  #pending: Buffer[] = [];
  #pendingBytes = 0;

  constructor(readonly max: number) {}

  *add(pieces: Buffer[]): Generator<Buffer> {
    for (const p of pieces) {
      if (p.length < GATHER_BYTES) {
        if (this.#pendingBytes + p.length > this.max) yield* this.flush();
        this.#pending.push(p);
        this.#pendingBytes += p.length;
        if (this.#pendingBytes >= GATHER_BYTES) yield* this.flush();
        continue;
      }
      yield* this.flush();
      for (let at = 0; at < p.length; at += this.max) yield p.subarray(at, Math.min(p.length, at + this.max));
    }
  }

  *flush(): Generator<Buffer> {
    if (this.#pendingBytes === 0) return;
    const b =
      this.#pending.length === 1 ? (this.#pending[0] as Buffer) : Buffer.concat(this.#pending, this.#pendingBytes);
    this.#pending = [];
    this.#pendingBytes = 0;
    yield b;
  }
}
