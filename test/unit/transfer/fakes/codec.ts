/**
 * A Codec for tests without the addon: node:zlib's raw deflate behind a one-byte tag per algorithm
 * (so data of one algorithm does not decompress as the other), with the addon's contract — null when
 * the result does not fit in maxLength, EBADMSG for data that does not decompress to exactly rawLength
 * — and counters of the calls at once (to check the bounds on work in flight).
 */
import { promisify } from "node:util";
import { deflateRaw, inflateRaw } from "node:zlib";
import type { Codec, CodecAlgorithm } from "../../../../agents/ceph";

const deflate = promisify(deflateRaw);
const inflate = promisify(inflateRaw);
const TAG: Record<CodecAlgorithm, number> = { zstd: 0x5a, lz4: 0x4c };

function corrupt(what: string): Error {
  return Object.assign(new Error(`fake codec: ${what}`), { code: "EBADMSG" });
}

export class ZlibCodec implements Codec {
  compressed = 0;
  decompressed = 0;
  inFlight = 0;
  maxInFlight = 0;
  levels: number[] = [];

  constructor(readonly o: { delayMs?: (n: number) => number } = {}) {}

  async #busy<T>(fn: () => Promise<T>): Promise<T> {
    this.inFlight++;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    try {
      const d = this.o.delayMs?.(this.compressed + this.decompressed) ?? 0;
      if (d > 0) await new Promise((r) => setTimeout(r, d));
      return await fn();
    } finally {
      this.inFlight--;
    }
  }

  compress(
    algorithm: CodecAlgorithm,
    level: number,
    src: Buffer,
    maxLength?: number,
    into?: Buffer,
  ): Promise<Buffer | null> {
    return this.#busy(async () => {
      this.compressed++;
      this.levels.push(level);
      const body = await deflate(src);
      const out = Buffer.concat([Buffer.from([TAG[algorithm]]), body]);
      if (maxLength !== undefined && out.length > maxLength) return null;
      if (!into) return out;
      if (into.length < (maxLength ?? out.length)) throw new RangeError("into is shorter than maxLength");
      out.copy(into);
      return into.subarray(0, out.length);
    });
  }

  decompress(algorithm: CodecAlgorithm, src: Buffer, rawLength: number, into?: Buffer): Promise<Buffer> {
    return this.#busy(async () => {
      this.decompressed++;
      if (src[0] !== TAG[algorithm]) throw corrupt("not data of this algorithm");
      let raw: Buffer;
      try {
        raw = await inflate(src.subarray(1), { maxOutputLength: rawLength + 1 });
      } catch (e) {
        throw corrupt((e as Error).message);
      }
      if (raw.length !== rawLength) throw corrupt(`${raw.length} bytes, expected ${rawLength}`);
      const out = into ?? Buffer.allocUnsafe(rawLength);
      raw.copy(out);
      return out;
    });
  }
}
