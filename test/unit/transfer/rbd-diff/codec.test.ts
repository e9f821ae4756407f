/**
 * The rbd-diff codec (agents/transfer/rbd-diff) without Ceph: the writer's bytes against the format
 * as Ceph defines it (/work/shared/rbd-diff-format.md), the parser on every way of cutting the input,
 * round trips, and every refusal: INVALID_ARGUMENT naming the byte offset.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { type DiffRecord, parseRbdDiff } from "../../../../agents/transfer/rbd-diff/parser";
import { RbdDiffWriter } from "../../../../agents/transfer/rbd-diff/writer";
import { AppError, Status } from "../../../../src/common/errors";

const le64 = (n: number) => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(n));
  return b;
};
const le32 = (n: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return b;
};
const ch = (c: string) => Buffer.from(c, "latin1");

/** A v1 stream written by hand, byte by byte as the format document describes it. */
function handV1(): Buffer {
  return Buffer.concat([
    ch("rbd diff v1\n"),
    ch("f"),
    le32(2),
    ch("s1"),
    ch("t"),
    le32(2),
    ch("s2"),
    ch("s"),
    le64(1 << 20),
    ch("w"),
    le64(4096),
    le64(3),
    ch("abc"),
    ch("z"),
    le64(8192),
    le64(4096),
    ch("e"),
  ]);
}

function handV2(): Buffer {
  return Buffer.concat([
    ch("rbd diff v2\n"),
    ch("f"),
    le64(6),
    le32(2),
    ch("s1"),
    ch("t"),
    le64(6),
    le32(2),
    ch("s2"),
    ch("p"),
    le64(8), // as Ceph writes it: declared length 8, one byte of payload
    Buffer.from([0]),
    ch("s"),
    le64(8),
    le64(1 << 20),
    ch("w"),
    le64(19),
    le64(4096),
    le64(3),
    ch("abc"),
    ch("z"),
    le64(16),
    le64(8192),
    le64(4096),
    ch("e"),
  ]);
}

function write(version: 1 | 2): Buffer {
  const w = new RbdDiffWriter(version);
  return Buffer.concat([
    ...w.begin({ fromSnapshot: "s1", toSnapshot: "s2", size: 1 << 20 }),
    ...w.data(4096, ch("abc")),
    ...w.zero(8192, 4096),
    ...w.end(),
  ]);
}

/** `b` cut into pieces of `n` bytes. */
async function* pieces(b: Buffer, n: number): AsyncGenerator<Buffer> {
  for (let i = 0; i < b.length; i += n) yield b.subarray(i, i + n);
}

async function parse(b: Buffer | AsyncIterable<Uint8Array>, piece = 7, maxPiece = 1 << 20, version?: 1 | 2) {
  const src = Buffer.isBuffer(b) ? pieces(b, piece) : b;
  const out: DiffRecord[] = [];
  for await (const r of parseRbdDiff(src, { maxPiece, ...(version ? { version } : {}) })) out.push(r);
  return out;
}

/** Parsing fails with INVALID_ARGUMENT whose message names `offset` (and `text` when given). */
async function refused(b: Buffer, offset: number, text?: RegExp, version?: 1 | 2) {
  await assert.rejects(parse(b, 5, 1 << 20, version), (e: unknown) => {
    assert.ok(e instanceof AppError, String(e));
    assert.equal(e.status, Status.INVALID_ARGUMENT);
    assert.match(e.message, new RegExp(`byte offset ${offset}\\b`), e.message);
    if (text) assert.match(e.message, text);
    return true;
  });
}

/** Records without positions, data joined per image offset: what the stream means. */
function meaning(rs: DiffRecord[]) {
  return rs.map((r) => {
    const { at: _, ...rest } = r;
    return r.type === "data" ? { ...rest, data: r.data.toString("hex") } : rest;
  });
}

describe("rbd-diff writer", () => {
  it("v1: byte-identical to the format's layout", () => {
    assert.deepEqual(write(1), handV1());
  });
  it("v2: byte-identical to Ceph's layout (lengths; 'p' after 't', declared length 8 as Ceph writes it)", () => {
    assert.deepEqual(write(2), handV2());
  });
  it("a stream without snapshots is banner, 's', records, 'e'", () => {
    const w = new RbdDiffWriter(1);
    const b = Buffer.concat([...w.begin({ size: 512 }), ...w.end()]);
    assert.deepEqual(b, Buffer.concat([ch("rbd diff v1\n"), ch("s"), le64(512), ch("e")]));
    assert.equal(w.bytes, b.length);
  });
  it("refuses what import-diff or merge-diff would refuse: out of order, overlap, beyond the size, empty, after 'e'", () => {
    const w = new RbdDiffWriter(1);
    w.begin({ size: 8192 });
    w.data(4096, ch("x"));
    assert.throws(() => w.zero(0, 10), /overlaps or precedes/);
    assert.throws(() => w.zero(4097, 0), /bad extent/);
    assert.throws(() => w.zero(4097, 8192), /beyond the size/);
    w.end();
    assert.throws(() => w.zero(5000, 1), /after end/);
  });
});

describe("rbd-diff parser", () => {
  it("reads the hand-written v1 and v2 streams, cut every way (1..64-byte pieces)", async () => {
    const expected = [
      { type: "from", name: "s1" },
      { type: "to", name: "s2" },
      { type: "size", size: 1 << 20 },
      { type: "data", offset: 4096, data: ch("abc").toString("hex") },
      { type: "zero", offset: 8192, length: 4096 },
      { type: "end" },
    ];
    for (const piece of [1, 2, 3, 13, 64]) {
      assert.deepEqual(meaning(await parse(handV1(), piece)), [{ type: "banner", version: 1 }, ...expected]);
      const v2 = meaning(await parse(handV2(), piece));
      assert.deepEqual(v2, [
        { type: "banner", version: 2 },
        ...expected.slice(0, 2),
        { type: "protect", value: false },
        ...expected.slice(2),
      ]);
    }
  });

  it("positions: each record's start in the stream", async () => {
    const rs = await parse(handV1());
    assert.deepEqual(
      rs.map((r) => [r.type, r.at]),
      [
        ["banner", 0],
        ["from", 12],
        ["to", 19],
        ["size", 26],
        ["data", 35],
        ["zero", 55],
        ["end", 72],
      ],
    );
  });

  it("round trip: a random stream parses back to its records and re-writes byte-identically", async () => {
    let seed = 7;
    const rnd = (n: number) => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    for (const version of [1, 2] as const) {
      const size = 64 << 20;
      const w = new RbdDiffWriter(version);
      const parts = [...w.begin({ toSnapshot: "backup.x.snap.1", size })];
      for (let off = rnd(5000); off < size - (1 << 20); off += 1 + rnd(1 << 19)) {
        const len = 1 + rnd(300_000);
        if (rnd(2)) parts.push(...w.zero(off, len));
        else parts.push(...w.data(off, Buffer.alloc(len, 1 + rnd(200))));
        off += len;
      }
      parts.push(...w.end());
      const stream = Buffer.concat(parts);
      const rs = await parse(stream, 65_537, 1 << 20);
      // Re-write from the parsed records (data pieces of one record joined back).
      const w2 = new RbdDiffWriter(version);
      const out: Buffer[] = [];
      let to = "";
      let pending: { offset: number; bufs: Buffer[]; at: number } | null = null;
      const flush = () => {
        if (pending) out.push(...w2.data(pending.offset, Buffer.concat(pending.bufs)));
        pending = null;
      };
      for (const r of rs) {
        if (r.type !== "data") flush();
        if (r.type === "to") to = r.name;
        else if (r.type === "size") out.push(...w2.begin({ toSnapshot: to, size: r.size }));
        else if (r.type === "zero") out.push(...w2.zero(r.offset, r.length));
        else if (r.type === "end") out.push(...w2.end());
        else if (r.type === "data") {
          assert.ok(r.data.length <= 1 << 20, "a data piece stays within maxPiece");
          if (pending && pending.at === r.at) pending.bufs.push(r.data);
          else {
            flush();
            pending = { offset: r.offset, bufs: [r.data], at: r.at };
          }
        }
      }
      assert.ok(Buffer.concat(out).equals(stream), `v${version} re-written byte-identically`);
    }
  });

  it("bounded memory: a 64 MiB 'w' record comes out in pieces of at most maxPiece, cut at its multiples", async () => {
    const len = 64 << 20;
    async function* big(): AsyncGenerator<Buffer> {
      yield Buffer.concat([ch("rbd diff v1\n"), ch("s"), le64(1 << 30), ch("w"), le64(1000), le64(len)]);
      const piece = Buffer.alloc(1 << 16, 7);
      for (let i = 0; i < len / piece.length; i++) yield piece;
      yield ch("e");
    }
    let n = 0;
    let total = 0;
    for await (const r of parseRbdDiff(big(), { maxPiece: 1 << 20 })) {
      if (r.type !== "data") continue;
      assert.ok(r.data.length <= 1 << 20);
      if (n > 0) assert.equal(r.offset % (1 << 20), 0);
      n++;
      total += r.data.length;
    }
    assert.equal(total, len);
  });

  it("v2 skips an unknown record by its length", async () => {
    const s = handV2();
    const unknown = Buffer.concat([ch("q"), le64(5), ch("hello")]);
    const at = s.indexOf(ch("w"), 40);
    const b = Buffer.concat([s.subarray(0, at), unknown, s.subarray(at)]);
    const types = (await parse(b)).map((r) => r.type);
    assert.deepEqual(types, ["banner", "from", "to", "protect", "size", "data", "zero", "end"]);
  });
});

describe("rbd-diff parser refusals (INVALID_ARGUMENT naming the offset)", () => {
  it("truncated at every byte: refused, naming where it ends", async () => {
    for (const full of [handV1(), handV2()]) {
      for (let cut = 0; cut < full.length; cut++) {
        await assert.rejects(parse(full.subarray(0, cut), 3), (e: unknown) => {
          assert.ok(e instanceof AppError && e.status === Status.INVALID_ARGUMENT, String(e));
          assert.match(e.message, /byte offset \d+/);
          return true;
        });
      }
    }
    await refused(
      handV1().subarray(0, 40),
      40,
      /truncated: it ends at byte 40 inside the 'w' record that starts at byte 35/,
    );
    await refused(handV1().subarray(0, 72), 72, /without its 'e' record/);
  });
  it("a snapshot name that is not UTF-8 (its bytes would read as U+FFFD, equal to another's)", async () => {
    const name = Buffer.from([0xfe, 0x41]);
    const u32 = Buffer.alloc(4);
    u32.writeUInt32LE(name.length);
    const b = Buffer.concat([ch("rbd diff v1\n"), ch("t"), u32, name, ch("s"), le64(4096), ch("e")]);
    await refused(b, 12, /'t' snapshot name is not valid UTF-8/);
  });
  it("a wrong banner", async () => {
    await refused(Buffer.concat([ch("rbd image v2\n"), ch("e")]), 0, /not an rbd diff stream/);
    await refused(handV1(), 0, /format v1, but v2 was asked/, 2);
  });
  it("an unknown tag in v1 (it cannot be skipped)", async () => {
    const b = handV1();
    b[55] = 0x71; // the 'z' becomes 'q'
    await refused(b, 55, /unknown record tag 'q'/);
  });
  it("a v2 length that does not fit its record", async () => {
    const b = handV2();
    b.writeBigUInt64LE(17n, 70); // the 'w' record's length (19)
    await refused(b, 69, /payload is 17 bytes, its fields make 19/);
  });
  it("an extent beyond the size, overlapping, empty; metadata after data; data before the size; twice the size", async () => {
    const head = Buffer.concat([ch("rbd diff v1\n"), ch("s"), le64(8192)]);
    const e = ch("e");
    await refused(Buffer.concat([head, ch("z"), le64(4096), le64(8192), e]), 21, /beyond the image size 8192/);
    await refused(
      Buffer.concat([head, ch("z"), le64(4096), le64(10), ch("z"), le64(0), le64(10), e]),
      38,
      /overlaps or precedes/,
    );
    await refused(Buffer.concat([head, ch("z"), le64(4096), le64(0), e]), 21, /empty 'z'/);
    await refused(
      Buffer.concat([head, ch("z"), le64(0), le64(1), ch("t"), le32(1), ch("x"), e]),
      38,
      /after data records/,
    );
    await refused(Buffer.concat([ch("rbd diff v1\n"), ch("z"), le64(0), le64(1), e]), 12, /before the 's'/);
    await refused(Buffer.concat([head, ch("s"), le64(8192), e]), 21, /a second 's'/);
  });
  it("a name over 4096 bytes; a value beyond 2^53; bytes after 'e'", async () => {
    await refused(Buffer.concat([ch("rbd diff v1\n"), ch("f"), le32(5000), Buffer.alloc(5000)]), 12, /4096/);
    const huge = Buffer.alloc(8, 0xff);
    await refused(Buffer.concat([ch("rbd diff v1\n"), ch("s"), huge, ch("e")]), 13, /beyond 2\^53/);
    await refused(Buffer.concat([handV1(), ch("x")]), 73, /bytes follow the 'e' record/);
  });

  it("an empty snapshot name: refused alike however the bytes are cut (it was accepted whole, INTERNAL when cut after its length)", async () => {
    const empty = Buffer.concat([ch("rbd diff v1\n"), ch("f"), le32(0), ch("s"), le64(1 << 20), ch("e")]);
    // Cut right after the 4-byte length (the name's length field ends a message), and whole.
    for (const src of [[empty.subarray(0, 17), empty.subarray(17)], [empty]]) {
      await assert.rejects(
        (async () => {
          for await (const _ of parseRbdDiff(
            (async function* () {
              yield* src;
            })(),
            { maxPiece: 1 << 20 },
          )) {
            // nothing is expected
          }
        })(),
        (e: unknown) =>
          e instanceof AppError &&
          e.status === Status.INVALID_ARGUMENT &&
          /byte offset 12\b/.test(e.message) &&
          /snapshot name is empty/.test(e.message),
      );
    }
  });
});

describe("rbd-diff parser: the 'p' record's length", () => {
  it("reads Ceph's declared length 8 and the rule's 1 (one byte of payload either way); refuses others", async () => {
    for (const declared of [8, 1]) {
      const b = Buffer.concat([
        ch("rbd diff v2\n"),
        ch("p"),
        le64(declared),
        Buffer.from([1]),
        ch("s"),
        le64(8),
        le64(4096),
        ch("e"),
      ]);
      const rs = await parse(b);
      assert.deepEqual(
        rs.map((r) => r.type),
        ["banner", "protect", "size", "end"],
      );
      assert.equal((rs[1] as { value: boolean }).value, true);
    }
    const bad = Buffer.concat([ch("rbd diff v2\n"), ch("p"), le64(2), Buffer.from([1, 0]), ch("e")]);
    await refused(bad, 12, /payload is 2 bytes/);
  });
});
