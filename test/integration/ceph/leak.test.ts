/**
 * Leak check of the addon (chosen over valgrind: librados' own threads and caches make valgrind
 * reports on a real cluster noisy and slow). 8,000 open/read/close cycles, plus diff iterators and
 * connections opened and closed; resident memory must stay bounded. A leaked image context costs
 * tens of KiB, so 7,200 leaks after the warm-up would add 70 MiB or more; the bound below allows 48 MiB
 * of growth. (RBDBACKUP_LEAK_CYCLES sets another count, e.g. 20000 for a longer run.)
 * Under a sanitizer (RBDBACKUP_SANITIZER set by test/asan.sh) the RSS figures are logged, not asserted:
 * ASan's quarantine and shadow memory grow RSS by design; there the churn is what is tested.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { IoCtx } from "../../../agents/ceph";
import { connectLab, uniqueName } from "../../helpers/lab";

const MiB = 1 << 20;
const CYCLES = Number(process.env.RBDBACKUP_LEAK_CYCLES ?? 8_000);
const WARMUP = Math.floor(CYCLES / 10);
const PARALLEL = 8;
const SANITIZER = process.env.RBDBACKUP_SANITIZER;

/** Asserts RSS growth within `bound` MiB, except under a sanitizer (see the module comment). */
function assertGrowth(growth: number, bound: number, what: string): void {
  if (SANITIZER) {
    console.log(`leak check: RSS growth not asserted under ${SANITIZER}`);
    return;
  }
  assert.ok(growth < bound, `RSS grew ${growth.toFixed(1)} MiB over ${what}`);
}

describe("leak check", () => {
  it(`${CYCLES} open/read/close cycles keep RSS bounded`, { timeout: 600_000 }, async () => {
    const cluster = await connectLab("site-a");
    const io = await cluster.openIoCtx("rbd");
    const name = uniqueName("leak");
    await io.imageCreate(name, 4 * MiB);
    try {
      const w = await io.imageOpen(name);
      await w.write(Buffer.alloc(4 * MiB, 3), 0);
      await w.snapCreate("s");
      await w.close();
      await cycles(io, name);
    } finally {
      // Whatever failed (the RSS bound is what this test is for), the image and the connection go.
      const im = await io.imageOpen(name).catch(() => null);
      await im?.snapRemove("s").catch(() => {});
      await im?.close();
      await io.imageRemove(name).catch(() => {});
      await io.close();
      await cluster.close();
    }
  });

  async function cycles(io: IoCtx, name: string): Promise<void> {
    let started = 0;
    let rssAfterWarmup = 0;
    const buffers = Array.from({ length: PARALLEL }, () => Buffer.alloc(64 * 1024));
    async function worker(k: number): Promise<void> {
      const buf = buffers[k] as Buffer;
      while (started < CYCLES) {
        const i = started++;
        if (i === WARMUP) rssAfterWarmup = process.memoryUsage().rss;
        // Alternate head and snapshot opens, and every 100th cycle run a diff and break out of it.
        const im = await io.imageOpen(name, i % 2 ? { readOnly: true } : { snapshot: "s" });
        const n = await im.read(buf, (i * 4096) % (4 * MiB - buf.length));
        assert.equal(n, buf.length);
        assert.equal(buf[0], 3);
        if (i % 100 === 0) {
          for await (const _ of im.diff({ batchSize: 1 })) break;
        }
        await im.close();
      }
    }
    await Promise.all(Array.from({ length: PARALLEL }, (_, k) => worker(k)));
    const rssEnd = process.memoryUsage().rss;
    const growth = (rssEnd - rssAfterWarmup) / MiB;
    console.log(
      `leak check: ${CYCLES} cycles, RSS after warm-up ${(rssAfterWarmup / MiB).toFixed(1)} MiB, at end ${(rssEnd / MiB).toFixed(1)} MiB, growth ${growth.toFixed(1)} MiB`,
    );
    assertGrowth(growth, 48, `${CYCLES - WARMUP} cycles`);
  }

  it("200 connect/close cycles keep RSS bounded", { timeout: 300_000 }, async () => {
    let base = 0;
    for (let i = 0; i < 200; i++) {
      if (i === 20) base = process.memoryUsage().rss;
      const c = await connectLab("site-a");
      const io = await c.openIoCtx("rbd");
      await io.imageList();
      await io.close();
      await c.close();
    }
    const growth = (process.memoryUsage().rss - base) / MiB;
    console.log(`leak check: 180 connections, RSS growth ${growth.toFixed(1)} MiB`);
    assertGrowth(growth, 64, "180 connections");
  });
});
