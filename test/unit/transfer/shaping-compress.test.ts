/**
 * compressStream (agents/transfer/shaping/compress.ts) with an injected codec (no addon): the header
 * marked, compressible chunks compressed and incompressible ones sent as they are (keeping their
 * frame), the CRC over the raw bytes, order kept with chunks finishing out of order, work in flight and
 * read-ahead bounded, frames released, the wire encoding carrying compression and raw_length, and the
 * destination's decompression (sink/decompress.ts) giving back the same bytes.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { describe, it } from "node:test";
import { noMeter, type TransferMeter } from "../../../agents/transfer/meter";
import { compressStream, worthItBelow } from "../../../agents/transfer/shaping/compress";
import { inflated } from "../../../agents/transfer/sink/decompress";
import {
  encodeTransferMessage,
  FRAME,
  FramePool,
  finishChunkFrame,
  grpcFramed,
  type MaybeFramed,
} from "../../../agents/transfer/wire";
import { Compression } from "../../../src/gen/rbdbackup/v1/common";
import { type DataChunk, TransferMessage } from "../../../src/gen/rbdbackup/v1/transfer";
import { until } from "../../helpers/wait";
import { ZlibCodec } from "./fakes/codec";
import { crc32c } from "./fakes/crc32c";
import { Feed, header, KiB, messages, type Part } from "./fakes/stream";

const CHUNK = 64 * KiB;

/** Text-like bytes that compress well. */
function text(length: number, seed: number): Buffer {
  const words = ["backup", "volume", "snapshot", "ceph", "rbd", "chunk", "agent", `n${seed}`];
  let s = "";
  for (let i = 0; s.length < length; i++) s += `${words[(i * 7 + seed) % words.length]} `;
  return Buffer.from(s.slice(0, length));
}

async function collect(it: AsyncIterable<TransferMessage>): Promise<TransferMessage[]> {
  const out: TransferMessage[] = [];
  for await (const m of it) out.push(m);
  return out;
}

function chunkOf(m: TransferMessage | undefined): DataChunk {
  assert.equal(m?.body?.$case, "chunk");
  return (m as { body: { value: DataChunk } }).body.value;
}

function meterInto(totals: Map<string, [number, number]>): TransferMeter {
  return {
    ...noMeter,
    compression: (direction, algorithm, raw, wire) => {
      const k = `${direction}/${algorithm}`;
      const t = totals.get(k) ?? [0, 0];
      totals.set(k, [t[0] + raw, t[1] + wire]);
    },
  };
}

const parts = (): Part[] => [
  { offset: 0, data: text(CHUNK, 1) },
  { offset: CHUNK, data: randomBytes(CHUNK) },
  { offset: 2 * CHUNK, zero: CHUNK },
  { offset: 3 * CHUNK, data: Buffer.concat([Buffer.alloc(CHUNK - 100), randomBytes(100)]) },
];

describe("compressStream", () => {
  it("NONE: the stream as it is", () => {
    const msgs = new Feed(messages(header(), parts()));
    assert.equal(compressStream(msgs, Compression.COMPRESSION_NONE, { zstdLevel: 1 }), msgs);
  });

  for (const [compression, algorithm] of [
    [Compression.COMPRESSION_ZSTD, "zstd"],
    [Compression.COMPRESSION_LZ4, "lz4"],
  ] as const) {
    it(`${algorithm}: header marked, compressible chunks compressed, random data sent raw, round trip byte-identical`, async () => {
      const h = header({ imageSize: 4 * CHUNK });
      const ps = parts();
      const original = messages(h, ps);
      const codec = new ZlibCodec();
      const totals = new Map<string, [number, number]>();
      const wire = await collect(
        compressStream(new Feed(original), compression, { zstdLevel: 7, codec, meter: meterInto(totals) }),
      );
      assert.deepEqual(
        wire.map((m) => m.body?.$case),
        ["header", "chunk", "chunk", "zero", "chunk", "trailer"],
      );
      assert.equal(wire[0]?.body?.$case === "header" && wire[0].body.value.compression, compression);
      assert.equal(h.compression, 0, "the caller's header is not modified");
      const [text1, random, , zeros] = [chunkOf(wire[1]), chunkOf(wire[2]), null, chunkOf(wire[4])];
      for (const c of [text1, zeros]) {
        assert.equal(c.compression, compression);
        assert.equal(c.rawLength, CHUNK);
        assert.ok(c.data.length < CHUNK / 4, `compressed to ${c.data.length}`);
      }
      assert.equal(random.compression, 0, "incompressible: sent as it is");
      assert.equal(random.rawLength, 0);
      assert.equal(wire[2], original[2], "the same message (and frame)");
      for (const i of [1, 2, 4]) assert.equal(chunkOf(wire[i]).crc32, chunkOf(original[i]).crc32, "CRC over raw bytes");
      assert.deepEqual(
        wire.map((m) => m.body?.$case === "chunk" && m.body.value.offset),
        [false, 0, CHUNK, false, 3 * CHUNK, false],
      );
      assert.equal(wire[5], original[5], "the trailer (digest over raw records) unchanged");
      assert.ok(
        codec.levels.every((l) => l === 7),
        "the configured zstd level",
      );
      const sent = totals.get(`sent/${algorithm}`);
      assert.ok(sent);
      assert.equal(sent[0], 3 * CHUNK, "raw bytes of every chunk");
      assert.equal(sent[1], text1.data.length + CHUNK + zeros.data.length, "wire bytes (the raw chunk counts as is)");

      // Through the wire encoding and back: compression and raw_length survive.
      const decoded = wire.map((m) => TransferMessage.decode(encodeTransferMessage(m)));
      assert.equal(chunkOf(decoded[1]).compression, compression);
      assert.equal(chunkOf(decoded[1]).rawLength, CHUNK);

      // The destination's side gives back the raw bytes.
      const it = decoded[Symbol.iterator]();
      const hdr = it.next().value as TransferMessage;
      assert.equal(hdr.body?.$case, "header");
      const hv = (hdr.body as { value: typeof h }).value;
      const rest = (async function* () {
        yield* it;
      })()[Symbol.asyncIterator]();
      const back = inflated(rest, hv, { codec, meter: meterInto(totals) });
      const raw: TransferMessage[] = [];
      for (;;) {
        const r = await back.next();
        if (r.done) break;
        raw.push(r.value);
      }
      const data = raw.filter((m) => m.body?.$case === "chunk").map((m) => Buffer.from(chunkOf(m).data));
      assert.deepEqual(
        data.map((d) => crc32c(d)),
        ps.filter((p) => "data" in p).map((p) => crc32c((p as { data: Buffer }).data)),
      );
      assert.ok(data[0]?.equals((ps[0] as { data: Buffer }).data));
      assert.deepEqual(totals.get(`received/${algorithm}`), sent, "the destination counts the same bytes");
    });
  }

  it("only a saving of at least 1/32 is worth it", () => {
    assert.equal(worthItBelow(CHUNK), CHUNK - CHUNK / 32);
    assert.equal(worthItBelow(10), 9);
  });

  it("a compressed chunk goes out in a pooled frame of its own, its read frame back at once; a raw chunk keeps its read frame", async () => {
    class CountingPool extends FramePool {
      released: Buffer[] = [];
      override release(f: Parameters<FramePool["release"]>[0]): void {
        this.released.push(f.buffer);
        super.release(f);
      }
    }
    const frames = new CountingPool();
    const framed = (offset: number, data: Buffer): MaybeFramed => {
      const f = frames.acquire(data.length, CHUNK);
      data.copy(f.data);
      const crc = crc32c(f.data);
      finishChunkFrame(f, offset, crc);
      return {
        body: { $case: "chunk", value: { offset, data: f.data, crc32: crc, compression: 0, rawLength: 0 } },
        [FRAME]: f,
      };
    };
    const src = [framed(0, text(CHUNK, 2)), framed(CHUNK, randomBytes(CHUNK))];
    const readFrames = src.map((m) => m[FRAME]?.buffer);
    const out = (await collect(
      compressStream(new Feed(src), Compression.COMPRESSION_ZSTD, { zstdLevel: 1, codec: new ZlibCodec(), frames }),
    )) as MaybeFramed[];
    // Given back: the compressed chunk's read frame, and the frame the random chunk was tried in.
    assert.equal(frames.released.length, 2);
    assert.equal(frames.released[0], readFrames[0]);
    const own = out[0]?.[FRAME];
    assert.ok(own, "the compressed message is in a frame");
    assert.notEqual(own.buffer, readFrames[0]);
    assert.equal(frames.allocated, 4, "the two read frames, and one to compress each into (both at once)");
    // The frame's bytes are the message's exact encoding, compression and raw_length included.
    const wire = grpcFramed(own);
    const m = out[0] as TransferMessage;
    assert.deepEqual(wire.subarray(5), Buffer.from(encodeTransferMessage(m)));
    const back = chunkOf(TransferMessage.decode(wire.subarray(5)));
    assert.equal(back.compression, Compression.COMPRESSION_ZSTD);
    assert.equal(back.rawLength, CHUNK);
    assert.ok(back.data.length < CHUNK);
    assert.equal(out[1]?.[FRAME], src[1]?.[FRAME], "the raw one keeps its frame");
  });

  it("order kept when chunks finish out of order; in flight and read-ahead bounded by inFlight", async () => {
    const delays = [30, 1, 20, 1, 15, 2, 1, 25, 1, 3, 1, 1];
    const codec = new ZlibCodec({ delayMs: (n) => delays[n % delays.length] ?? 0 });
    let pulled = 0;
    let returned = false;
    async function* source(): AsyncGenerator<TransferMessage> {
      try {
        for (const m of messages(
          header({ imageSize: 40 * CHUNK }),
          Array.from({ length: 40 }, (_, i) => ({ offset: i * CHUNK, data: text(CHUNK, i) })),
        )) {
          pulled++;
          yield m;
        }
      } finally {
        returned = true;
      }
    }
    const inFlight = 3;
    let consumed = 0;
    let maxAhead = 0;
    const offsets: number[] = [];
    for await (const m of compressStream(source(), Compression.COMPRESSION_ZSTD, { zstdLevel: 1, codec, inFlight })) {
      consumed++;
      maxAhead = Math.max(maxAhead, pulled - consumed);
      if (m.body?.$case === "chunk") offsets.push(m.body.value.offset);
    }
    assert.deepEqual(
      offsets,
      Array.from({ length: 40 }, (_, i) => i * CHUNK),
    );
    assert.ok(codec.maxInFlight <= inFlight, `at most ${inFlight} compressions at once, saw ${codec.maxInFlight}`);
    assert.ok(codec.maxInFlight >= 2, "compressions did overlap");
    assert.ok(maxAhead <= inFlight, `pulled at most ${inFlight} ahead of the consumer, saw ${maxAhead}`);
    assert.ok(returned);
  });

  it("the header goes on at once, before the source yields what follows it (its snapshot, its first read)", async () => {
    let release: () => void = () => {};
    const held = new Promise<void>((r) => {
      release = r;
    });
    const [h, ...rest] = messages(header({ imageSize: CHUNK }), [{ offset: 0, data: text(CHUNK, 1) }]);
    async function* source(): AsyncGenerator<TransferMessage> {
      yield h as TransferMessage;
      await held; // the snapshot is being made, the first read runs
      yield* rest;
    }
    const out = compressStream(source(), Compression.COMPRESSION_ZSTD, { zstdLevel: 1, codec: new ZlibCodec() });
    const it = out[Symbol.asyncIterator]();
    let timer: NodeJS.Timeout | undefined;
    const waited = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error("the header waited for the source's next message")), 5_000);
    });
    try {
      const first = await Promise.race([it.next(), waited]);
      assert.equal(first.value?.body?.$case, "header");
    } finally {
      clearTimeout(timer);
      release();
    }
    assert.equal((await collect({ [Symbol.asyncIterator]: () => it })).length, rest.length);
  });

  it("a consumer that stops early: the frames of chunks compressed ahead and never taken go back to the pool", async () => {
    const frames = new FramePool();
    async function* src(): AsyncGenerator<MaybeFramed> {
      for (let i = 0; i < 8; i++) {
        const f = frames.acquire(CHUNK, CHUNK); // read as pulled, as the source does
        text(CHUNK, i).copy(f.data);
        const crc = crc32c(f.data);
        finishChunkFrame(f, i * CHUNK, crc);
        yield {
          body: {
            $case: "chunk",
            value: { offset: i * CHUNK, data: f.data, crc32: crc, compression: 0, rawLength: 0 },
          },
          [FRAME]: f,
        };
      }
    }
    const it = compressStream(src(), Compression.COMPRESSION_ZSTD, {
      zstdLevel: 1,
      codec: new ZlibCodec(),
      frames,
      inFlight: 4,
    })[Symbol.asyncIterator]();
    const first = (await it.next()).value as MaybeFramed;
    const taken = first[FRAME];
    assert.ok(taken);
    await it.return?.(undefined); // the transport gave up: the chunks compressed ahead are never sent
    frames.release(taken); // the one taken is the transport's to give back (once written)
    assert.ok(frames.allocated > 2, "chunks were compressed ahead");
    await until(() => frames.idle === frames.allocated, "every frame back to the pool");
  });

  it("a consumer that stops early stops the source; a codec failure fails the stream in its place", async () => {
    let finished = false;
    async function* source(): AsyncGenerator<TransferMessage> {
      try {
        yield* messages(
          header(),
          Array.from({ length: 4 }, (_, i) => ({ offset: i * CHUNK, data: text(CHUNK, i) })),
        );
      } finally {
        finished = true;
      }
    }
    for await (const m of compressStream(source(), Compression.COMPRESSION_LZ4, {
      zstdLevel: 1,
      codec: new ZlibCodec(),
    })) {
      if (m.body?.$case === "chunk") break;
    }
    assert.ok(finished, "the source's finally ran");

    const failing = new ZlibCodec();
    failing.compress = async () => {
      throw new Error("codec broke");
    };
    await assert.rejects(
      collect(
        compressStream(
          new Feed(messages(header(), [{ offset: 0, data: text(CHUNK, 1) }])),
          Compression.COMPRESSION_ZSTD,
          {
            zstdLevel: 1,
            codec: failing,
          },
        ),
      ),
      /codec broke/,
    );
  });
});
