/**
 * The stream rules the destination enforces (agents/transfer/sink/stream-checks.ts), through runSink:
 * every malformed stream gets its exact status, and none leaves anything in the pool.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { runSink } from "../../../agents/transfer/sink";
import { AppError, Status } from "../../../src/common/errors";
import type { TransferMessage } from "../../../src/gen/rbdbackup/v1/transfer";
import { crc32c } from "./fakes/crc32c";
import { FakeCeph, poolState } from "./fakes/fake-ceph";
import { sinkDeps } from "./fakes/sink-deps";
import { chunkParts, Feed, header, KiB, messages } from "./fakes/stream";

const CHUNK = 64 * KiB;

async function refused(msgs: TransferMessage[], o: { fsid?: string; full?: boolean } = {}) {
  const ceph = new FakeCeph("backups");
  ceph.full = !!o.full;
  ceph.addImage("backups", "other.backup.x", Buffer.alloc(CHUNK, 1), ["backup.x.snap.1"]);
  const before = poolState(ceph, "backups");
  const deps = sinkDeps(ceph, o.fsid ? { fsid: o.fsid } : {});
  const e = await runSink(deps, new Feed(msgs)).then(
    () => assert.fail("the stream was accepted"),
    (x: unknown) => x,
  );
  assert.ok(e instanceof AppError, String(e));
  assert.equal(poolState(ceph, "backups"), before, "nothing left in the pool");
  assert.equal(deps.journal.entries.size, 0, "no journal entry left");
  return e;
}

describe("sink stream checks", () => {
  it("the JS CRC-32C used without the addon is CRC-32C (known answer)", () => {
    assert.equal(crc32c(Buffer.from("123456789")), 0xe3069283);
  });

  const h = header();
  const ok = messages(h, chunkParts(2, CHUNK));
  const chunk = ok[1] as TransferMessage;
  const trailer = ok[3] as TransferMessage;
  const cases: Array<[string, TransferMessage[], Status, RegExp, { fsid?: string; full?: boolean }?]> = [
    ["no header first", [chunk], Status.INVALID_ARGUMENT, /must start with a header/],
    ["an empty stream", [], Status.INVALID_ARGUMENT, /must start with a header/],
    [
      "a header for another cluster",
      messages(header({ expectedFsid: "fsid-a" }), []),
      Status.FAILED_PRECONDITION,
      /not the expected fsid fsid-a/,
    ],
    ["a header that is not valid", messages(header({ imageSize: 0 }), []), Status.INVALID_ARGUMENT, /image_size/],
    [
      "a backup of an image over 512 TiB (its digest map's block size would not fit)",
      messages(header({ imageSize: 2 ** 49 + 4096 }), []),
      Status.INVALID_ARGUMENT,
      /describes images up to 562949953421312 bytes/,
    ],
    [
      "a backup's metadata object naming another chain",
      messages(
        {
          ...h,
          metadataJson: Buffer.from(
            JSON.stringify({
              version: 1,
              backup_id: h.backupId,
              chain: { base_image: "x.backup.y", snapshot: h.toSnapshot },
            }),
          ),
        },
        [],
      ),
      Status.INVALID_ARGUMENT,
      /metadata_json names base_image "x\.backup\.y", the stream writes vol\.backup\./,
    ],
    [
      "a pool that does not exist",
      messages(header({ destination: { pool: "nope", namespace: "", image: "x" } }), []),
      Status.NOT_FOUND,
      /pool nope does not exist/,
    ],
    ["a full pool", ok, Status.RESOURCE_EXHAUSTED, /is full/, { full: true }],
    ["a second header", [ok[0] as TransferMessage, ok[0] as TransferMessage], Status.INVALID_ARGUMENT, /second header/],
    ["a message after the trailer", [...ok, chunk], Status.INVALID_ARGUMENT, /followed the trailer/],
    [
      "a message without a body (a kind from a newer version decodes so)",
      [ok[0] as TransferMessage, { body: undefined }],
      Status.UNIMPLEMENTED,
      /without a body this agent knows: a kind sent by a newer agent version/,
    ],
    [
      "a chunk beyond the image size",
      messages(h, [{ offset: h.imageSize - 10, data: Buffer.alloc(20, 1) }]),
      Status.INVALID_ARGUMENT,
      /lies beyond the image size/,
    ],
    [
      "a chunk above the announced chunk size",
      messages(h, [{ offset: 0, data: Buffer.alloc(CHUNK + 1, 1) }]),
      Status.INVALID_ARGUMENT,
      /limit 65536/,
    ],
    ["an empty zero range", messages(h, [{ offset: 0, zero: 0 }]), Status.INVALID_ARGUMENT, /zero range 0\+0 is empty/],
    ["no trailer", ok.slice(0, 3), Status.UNAVAILABLE, /ended before its trailer/],
    ["a lost chunk", [...ok.slice(0, 2), trailer], Status.DATA_LOSS, /the trailer counts 2 chunks/],
    ["a chunk twice", [...ok.slice(0, 3), chunk, trailer], Status.DATA_LOSS, /the trailer counts/],
    ["a wrong digest", messages(h, chunkParts(2, CHUNK), { trailer: "wrong-digest" }), Status.DATA_LOSS, /digest/],
    (() => {
      // The zero bytes counted in the trailer differ from those received (the digest alone would match).
      const z = messages(h, [
        { offset: 0, data: Buffer.alloc(CHUNK, 7) },
        { offset: CHUNK, zero: CHUNK },
      ]);
      const t = z[z.length - 1] as TransferMessage;
      if (t.body?.$case !== "trailer") throw new Error("no trailer");
      const wrong = { body: { $case: "trailer", value: { ...t.body.value, zeroBytes: CHUNK * 2 } } } as TransferMessage;
      return [
        "a trailer counting other zero bytes",
        [...z.slice(0, -1), wrong],
        Status.DATA_LOSS,
        /1 zero ranges \/ 131072 zero bytes, received 1 \/ 65536 \/ 1 \/ 65536/,
      ] as [string, TransferMessage[], Status, RegExp];
    })(),
  ];
  for (const [what, msgs, code, msg, o] of cases) {
    it(`${what}: ${Status[code]}, nothing left`, async () => {
      const e = await refused(msgs, o);
      assert.equal(e.status, code, e.message);
      assert.match(e.message, msg);
    });
  }
});
