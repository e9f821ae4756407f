/**
 * The destination's decompression (agents/transfer/sink/decompress.ts) through runSink, with an
 * injected codec (no addon): a compressed stream lands byte-identical with every received buffer given
 * back once; every bad input gets its exact status, nothing is written and nothing is left behind.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { describe, it } from "node:test";
import { compressStream } from "../../../agents/transfer/shaping/compress";
import { runSink } from "../../../agents/transfer/sink";
import { RELEASE, type Releasable } from "../../../agents/transfer/wire";
import { AppError, Status } from "../../../src/common/errors";
import { Compression } from "../../../src/gen/rbdbackup/v1/common";
import type { DataChunk, TransferHeader, TransferMessage } from "../../../src/gen/rbdbackup/v1/transfer";
import { ZlibCodec } from "./fakes/codec";
import { FakeCeph, poolState } from "./fakes/fake-ceph";
import { sinkDeps } from "./fakes/sink-deps";
import { Feed, header, KiB, messages, type Part, pattern } from "./fakes/stream";

const CHUNK = 64 * KiB;
const codec = new ZlibCodec();

/** Compressible, incompressible, a zero range, compressible again. */
function parts(): Part[] {
  return [
    { offset: 0, data: Buffer.alloc(CHUNK, 7) },
    { offset: CHUNK, data: randomBytes(CHUNK) },
    { offset: 2 * CHUNK, zero: CHUNK },
    { offset: 3 * CHUNK, data: Buffer.concat([pattern(1000, 3), Buffer.alloc(CHUNK - 1000)]) },
  ];
}

/** The stream as a destination receives it: compressed by compressStream, each chunk's buffer releasable (counted). */
async function wire(
  h: TransferHeader,
  ps: Part[],
  compression: Compression,
  o: { corrupt?: number } = {},
): Promise<{ msgs: TransferMessage[]; releases: number[] }> {
  const msgs: TransferMessage[] = [];
  const releases: number[] = [];
  for await (const m of compressStream(new Feed(messages(h, ps, o)), compression, { zstdLevel: 1, codec })) {
    if (m.body?.$case === "chunk") {
      const i = releases.push(0) - 1;
      const r: Releasable = { ...m };
      r[RELEASE] = () => {
        releases[i] = (releases[i] ?? 0) + 1;
      };
      msgs.push(r);
    } else msgs.push(m);
  }
  return { msgs, releases };
}

/** Message `i` (a chunk) with some of its fields changed. */
function withChunk(msgs: TransferMessage[], i: number, change: Partial<DataChunk>): TransferMessage[] {
  const out = [...msgs];
  const m = out[i] as Releasable;
  assert.equal(m.body?.$case, "chunk");
  const changed: Releasable = {
    body: { $case: "chunk", value: { ...(m.body as { value: DataChunk }).value, ...change } },
  };
  if (m[RELEASE]) changed[RELEASE] = m[RELEASE];
  out[i] = changed;
  return out;
}

function cluster(): FakeCeph {
  const ceph = new FakeCeph("backups");
  ceph.addImage("backups", "other.backup.x", pattern(CHUNK, 9), ["backup.x.snap.1"]);
  return ceph;
}

describe("sink: compressed streams", () => {
  for (const [compression, name] of [
    [Compression.COMPRESSION_ZSTD, "ZSTD"],
    [Compression.COMPRESSION_LZ4, "LZ4"],
  ] as const) {
    it(`${name}: written byte-identical; every received buffer released once; metrics of both sizes`, async () => {
      const ceph = cluster();
      const totals: Array<[string, string, number, number]> = [];
      const deps = sinkDeps(ceph, { codec });
      deps.meter = { ...deps.meter, compression: (d, a, raw, w) => totals.push([d, a, raw, w]) };
      const h = header({ imageSize: 4 * CHUNK });
      const ps = parts();
      const { msgs, releases } = await wire(h, ps, compression);
      const compressedChunks = msgs.filter(
        (m) => m.body?.$case === "chunk" && m.body.value.compression === compression,
      ).length;
      assert.equal(compressedChunks, 2, "the two compressible chunks went compressed");
      const s = await runSink(deps, new Feed(msgs));
      assert.equal(s.dataBytesWritten, 3 * CHUNK);
      const img = ceph.pool("backups").images.get(h.destination?.image as string);
      assert.ok(img);
      const want = Buffer.alloc(4 * CHUNK);
      for (const p of ps) if ("data" in p) p.data.copy(want, p.offset);
      assert.ok(img.data.equals(want), "byte-identical");
      assert.deepEqual(releases, [1, 1, 1]);
      assert.equal(totals.length, 3);
      assert.equal(
        totals.reduce((n, t) => n + t[2], 0),
        3 * CHUNK,
      );
      assert.ok(totals.reduce((n, t) => n + t[3], 0) < 2 * CHUNK, "fewer bytes on the wire");
    });
  }

  const cases: Array<[string, () => Promise<TransferMessage[]>, Status, RegExp]> = [
    [
      "a header with a compression this agent does not know",
      async () => messages(header({ compression: 7 as Compression }), []),
      Status.INVALID_ARGUMENT,
      /header\.compression 7/,
    ],
    [
      "a compressed chunk in a stream whose header says NONE",
      async () => {
        const { msgs } = await wire(header({ imageSize: 4 * CHUNK }), parts(), Compression.COMPRESSION_ZSTD);
        const h0 = msgs[0]?.body?.$case === "header" ? msgs[0].body.value : header();
        return [{ body: { $case: "header", value: { ...h0, compression: 0 } } }, ...msgs.slice(1)];
      },
      Status.INVALID_ARGUMENT,
      /header says compression NONE/,
    ],
    [
      "a chunk compressed with another algorithm than the header's",
      async () =>
        withChunk((await wire(header({ imageSize: 4 * CHUNK }), parts(), Compression.COMPRESSION_ZSTD)).msgs, 1, {
          compression: Compression.COMPRESSION_LZ4,
        }),
      Status.INVALID_ARGUMENT,
      /compressed with COMPRESSION_LZ4, the header says COMPRESSION_ZSTD/,
    ],
    [
      "raw_length 0",
      async () =>
        withChunk((await wire(header({ imageSize: 4 * CHUNK }), parts(), Compression.COMPRESSION_ZSTD)).msgs, 1, {
          rawLength: 0,
        }),
      Status.INVALID_ARGUMENT,
      /raw_length 0, must be 1\.\.65536/,
    ],
    [
      "raw_length above the chunk size",
      async () =>
        withChunk((await wire(header({ imageSize: 4 * CHUNK }), parts(), Compression.COMPRESSION_LZ4)).msgs, 1, {
          rawLength: CHUNK + 1,
        }),
      Status.INVALID_ARGUMENT,
      /raw_length 65537, must be 1\.\.65536/,
    ],
    [
      "data that does not decompress",
      async () =>
        withChunk((await wire(header({ imageSize: 4 * CHUNK }), parts(), Compression.COMPRESSION_ZSTD)).msgs, 1, {
          data: Buffer.concat([Buffer.from([0x5a]), randomBytes(200)]),
        }),
      Status.DATA_LOSS,
      /does not decompress to its 65536 bytes/,
    ],
    [
      "data that decompresses to fewer bytes than raw_length",
      async () =>
        withChunk((await wire(header({ imageSize: 4 * CHUNK }), parts(), Compression.COMPRESSION_ZSTD)).msgs, 1, {
          rawLength: CHUNK - 1,
        }),
      Status.DATA_LOSS,
      /does not decompress to its 65535 bytes/,
    ],
    [
      "data that decompresses to bytes whose CRC does not match",
      async () =>
        (await wire(header({ imageSize: 4 * CHUNK }), parts(), Compression.COMPRESSION_LZ4, { corrupt: 0 })).msgs,
      Status.DATA_LOSS,
      /checksum mismatch in the chunk at offset 0/,
    ],
  ];
  for (const [what, make, code, msg] of cases) {
    it(`${what}: ${Status[code]}, nothing written, nothing left`, async () => {
      const ceph = cluster();
      const before = poolState(ceph, "backups");
      const deps = sinkDeps(ceph, { codec });
      const crcFailures: string[] = [];
      deps.meter = { ...deps.meter, checksumFailure: (pool) => crcFailures.push(pool) };
      const msgs = await make();
      const e = await runSink(deps, new Feed(msgs)).then(
        () => assert.fail("the stream was accepted"),
        (x: unknown) => x,
      );
      assert.ok(e instanceof AppError, String(e));
      assert.equal(e.status, code, e.message);
      assert.match(e.message, msg);
      // Damaged data (it does not decompress, or its CRC does not match) counts once for the alert.
      assert.deepEqual(crcFailures, code === Status.DATA_LOSS ? ["backups"] : [], "checksum failures counted");
      assert.deepEqual(
        ceph.log.filter((l) => l.startsWith("write ")),
        [],
        "nothing written",
      );
      assert.equal(poolState(ceph, "backups"), before, "nothing left in the pool");
      assert.equal(deps.journal.entries.size, 0, "no journal entry left");
    });
  }
});
