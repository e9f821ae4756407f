/**
 * The rebuild writer (src/coordinator/rebuild/write.ts) over a fake catalog: one transaction per chain;
 * a chain that cannot be written, or a call cancelled between chains, stops it with what was already
 * written said (not a generic "nothing was changed").
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { AppError, Status } from "../../../src/common/errors";
import type { Catalog } from "../../../src/coordinator/catalog/catalog";
import type { Backup } from "../../../src/coordinator/model";
import { planRebuild } from "../../../src/coordinator/rebuild/plan";
import { writePlan } from "../../../src/coordinator/rebuild/write";
import { chain, input, scanned } from "./rebuild-fixtures";

/** A catalog whose insert of the `failAt`-th chain's first backup throws (SQLITE_FULL-like). */
function fakeCatalog(failAt = -1) {
  const rows = new Map<string, Backup>();
  let chains = 0;
  const catalog = {
    transaction<T>(f: () => T): T {
      const before = new Map(rows);
      try {
        if (chains++ === failAt) throw Object.assign(new Error("database or disk is full"), { code: "SQLITE_FULL" });
        return f();
      } catch (e) {
        rows.clear();
        for (const [k, b] of before) rows.set(k, b);
        throw e;
      }
    },
    getBackup: (id: string) => rows.get(id),
    insertBackup: (b: Backup) => void rows.set(b.id, b),
  } as unknown as Catalog;
  return { catalog, rows };
}

const plan = () =>
  planRebuild(input([...chain(1, "vol1"), ...chain(2, "vol2"), ...chain(0, "vol3")].map((m) => scanned(m))));

describe("catalog rebuild writer", () => {
  it("writes one chain per transaction", async () => {
    const { catalog, rows } = fakeCatalog();
    const out = await writePlan(catalog, plan());
    assert.equal(out.written.size, 6);
    assert.equal(rows.size, 6);
  });

  it("a chain that cannot be written: the error says how many chains and backups were written before it", async () => {
    const { catalog, rows } = fakeCatalog(1);
    const p = plan();
    const first = p.chains[0]?.backups.length ?? 0;
    await assert.rejects(
      writePlan(catalog, p),
      (e: unknown) =>
        e instanceof AppError &&
        new RegExp(
          `^the catalog rebuild wrote 1 of 3 chains \\(${first} backups\\) before it stopped: the chain of base image \\S+ could not be written .*run it again`,
        ).test(e.message),
    );
    assert.equal(rows.size, first, "the first chain stays written, nothing of the second");
  });

  it("a call cancelled between chains stops it CANCELLED, saying what was written", async () => {
    const { catalog, rows } = fakeCatalog();
    const ac = new AbortController();
    const p = plan();
    const writing = writePlan(catalog, p, ac.signal);
    ac.abort(); // before the second chain (the writer yields between chains)
    await assert.rejects(
      writing,
      (e: unknown) => e instanceof AppError && e.status === Status.CANCELLED && /wrote 1 of 3 chains/.test(e.message),
    );
    assert.equal(rows.size, p.chains[0]?.backups.length);
  });
});
