/**
 * Data written through the addon reads back byte-identical through the CLI and vice versa, with 64+
 * aio operations in flight at unaligned offsets and lengths.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { type Cluster, type IoCtx, isCephError } from "../../../agents/ceph";
import { connectLab, rbd, rbdExportSha256, sha256, uniqueName } from "../../helpers/lab";
import { layoutRandom } from "../../helpers/volumes";

const MiB = 1 << 20;

/** Cuts [0, size) into n pieces of random unaligned lengths. */
function pieces(size: number, n: number): Array<[number, number]> {
  const cuts = new Set<number>([0, size]);
  while (cuts.size < n + 1) cuts.add(1 + Math.floor(layoutRandom() * (size - 1)));
  const sorted = [...cuts].sort((a, b) => a - b);
  const out: Array<[number, number]> = [];
  for (let i = 0; i + 1 < sorted.length; i++)
    out.push([sorted[i] as number, (sorted[i + 1] as number) - (sorted[i] as number)]);
  return out;
}

describe("aio data path against the rbd CLI", () => {
  let cluster: Cluster;
  let io: IoCtx;
  const tmp = mkdtempSync(path.join(tmpdir(), "rbdbackup-io-"));
  const made: string[] = [];

  before(async () => {
    cluster = await connectLab("site-a");
    io = await cluster.openIoCtx("rbd");
  });

  after(async () => {
    // A test that failed midway may have left snapshots: they go first, or the removal fails.
    for (const n of made) {
      const im = await io.imageOpen(n).catch(() => null);
      for (const s of (await im?.snapList().catch(() => [])) ?? []) await im?.snapRemove(s.name).catch(() => {});
      await im?.close().catch(() => {});
      await io.imageRemove(n).catch((e: unknown) => {
        if (!isCephError(e, "ENOENT")) console.log(`# io.test: ${n} not removed: ${String(e)}`);
      });
    }
    await io?.close();
    await cluster?.close();
    rmSync(tmp, { recursive: true, force: true });
  });

  it("addon writes (96 in flight, unaligned) = rbd export", async () => {
    const size = 20 * MiB + 12345;
    const name = uniqueName("io-w");
    made.push(name);
    await io.imageCreate(name, size);
    const image = await io.imageOpen(name);
    const expected = randomBytes(size);
    // Leave a few pieces unwritten: they must read back as zeros.
    const parts = pieces(size, 200);
    const skipped = new Set([3, 50, 51, 120]);
    for (const i of skipped) {
      const [o, l] = parts[i] as [number, number];
      expected.fill(0, o, o + l);
    }
    let maxInflight = 0;
    const writes = parts.map(([o, l], i) => {
      if (skipped.has(i)) return Promise.resolve(0);
      const p = image.write(expected.subarray(o, o + l), o);
      maxInflight = Math.max(maxInflight, image.inflight);
      return p;
    });
    const written = await Promise.all(writes);
    assert.ok(maxInflight >= 64, `expected 64+ writes in flight, saw ${maxInflight}`);
    assert.equal(
      written.reduce((a, b) => a + b, 0),
      parts.reduce((a, [, l], i) => a + (skipped.has(i) ? 0 : l), 0),
    );
    await image.flush();
    await image.close();
    const exported = await rbdExportSha256("site-a", `rbd/${name}`);
    assert.equal(exported.bytes, size);
    assert.equal(exported.sha256, sha256(expected));
  });

  it("rbd import = addon reads (128 in flight, unaligned)", async () => {
    const size = 16 * MiB + 777;
    const name = uniqueName("io-r");
    made.push(name);
    const data = randomBytes(size);
    data.fill(0, 5 * MiB, 9 * MiB); // a hole the importer leaves sparse
    const file = path.join(tmp, "src.bin");
    writeFileSync(file, data);
    await rbd("site-a", ["import", "--no-progress", file, `rbd/${name}`]);
    const image = await io.imageOpen(name, { readOnly: true });
    const got = Buffer.alloc(size, 0xee); // not zero: reads must fill every byte
    let maxInflight = 0;
    const reads = pieces(size, 300).map(([o, l]) => {
      const p = image.read(got.subarray(o, o + l), o);
      maxInflight = Math.max(maxInflight, image.inflight);
      return p.then((n) => assert.equal(n, l));
    });
    await Promise.all(reads);
    assert.ok(maxInflight >= 64, `expected 64+ reads in flight, saw ${maxInflight}`);
    await image.close();
    assert.equal(sha256(got), sha256(data));
  });

  it("write-zeroes and discard read back as zeros through the CLI", async () => {
    const size = 12 * MiB;
    const name = uniqueName("io-z");
    made.push(name);
    await io.imageCreate(name, size);
    const image = await io.imageOpen(name);
    const expected = randomBytes(size);
    await image.write(expected, 0);
    await Promise.all([image.writeZeroes(1000, 3 * MiB + 5), image.discard(8 * MiB, 4 * MiB)]);
    expected.fill(0, 1000, 1000 + 3 * MiB + 5);
    expected.fill(0, 8 * MiB, 12 * MiB);
    await image.close();
    assert.equal((await rbdExportSha256("site-a", `rbd/${name}`)).sha256, sha256(expected));
  });

  it("reads at a snapshot see the snapshot, not the head", async () => {
    const name = uniqueName("io-s");
    made.push(name);
    await io.imageCreate(name, 4 * MiB);
    const image = await io.imageOpen(name);
    const before = randomBytes(4 * MiB);
    await image.write(before, 0);
    await image.snapCreate("s");
    await image.write(randomBytes(MiB), 100);
    const atSnap = await io.imageOpen(name, { snapshot: "s" });
    assert.equal(atSnap.readOnly, true);
    const got = Buffer.alloc(4 * MiB);
    await atSnap.read(got, 0);
    assert.equal(sha256(got), sha256(before));
    await atSnap.close();
    assert.equal((await rbdExportSha256("site-a", `rbd/${name}@s`)).sha256, sha256(before));
    await image.snapRemove("s");
    await image.close();
  });
});
