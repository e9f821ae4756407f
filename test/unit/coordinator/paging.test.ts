/**
 * Listing pages bounded by bytes (src/coordinator/api/paging.ts): a page stops once its items pass the
 * budget (never before its first), its token goes on right after the last item given, and following
 * the tokens gives every item once. Through a real server: ListBackups of backups carrying the most
 * metadata allowed answers a client with gRPC's default 4 MiB receive limit (it got RESOURCE_EXHAUSTED).
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { boundedPage, PAGE_BYTES } from "../../../src/coordinator/api/paging";
import type { Page } from "../../../src/coordinator/catalog/catalog";
import { BackupStatus } from "../../../src/gen/rbdbackup/v1/backup_service";
import { type ApiServer, serveHarness } from "./api-server";
import { Harness, newBackup, vol } from "./harness";

/** A catalog of `sizes` items (their byte sizes), paged by index tokens. */
function pages(sizes: number[]) {
  const asked: number[] = [];
  const list =
    (token: string) =>
    (n: number): Page<number> => {
      asked.push(n);
      const from = token ? Number(token) : 0;
      const items = sizes.slice(from, from + n).map((_, i) => from + i);
      return { items, next: from + n < sizes.length ? String(from + n) : "" };
    };
  return { list, asked };
}

describe("listing pages bounded by bytes", () => {
  it("a page stops at the budget, its token right after its last item; every item once", () => {
    const sizes = [400, 300, 500, 100, 100, 1200, 50];
    const { list, asked } = pages(sizes);
    const seen: number[][] = [];
    let token = "";
    do {
      const p = boundedPage(list(token), 5, (i) => sizes[i] as number, 1000);
      seen.push(p.items);
      token = p.next;
    } while (token);
    // 400+300 fit, +500 passes; 500+100+100 fit, +1200 passes; 1200 alone (over, but a page holds one); 50.
    assert.deepEqual(seen, [[0, 1], [2, 3, 4], [5], [6]]);
    assert.deepEqual(asked, [5, 2, 5, 3, 5, 1, 5]);
  });

  it("a page within the budget is asked once", () => {
    const { list, asked } = pages([10, 10, 10]);
    assert.deepEqual(
      boundedPage(list(""), 100, () => 10, 1000),
      { items: [0, 1, 2], next: "" },
    );
    assert.deepEqual(asked, [100]);
  });
});

describe("ListBackups of backups with the most metadata allowed", () => {
  let h: Harness;
  let served: ApiServer;
  const ids = new Set<string>();

  before(async () => {
    h = new Harness();
    served = await serveHarness(h);
    // 64 values of 4096 characters: ~265 KB a backup; 30 of them ~7.9 MB, twice a default client's limit.
    const meta = Object.fromEntries(Array.from({ length: 64 }, (_, i) => [`k${i}`, "m".repeat(4096)]));
    for (let i = 0; i < 30; i++) {
      const b = {
        ...newBackup(vol("v1"), "b", h.t),
        volumeMetadata: meta,
        status: BackupStatus.BACKUP_STATUS_AVAILABLE,
      };
      h.advance(1);
      h.catalog.insertBackup(b);
      ids.add(b.id);
    }
  });
  after(async () => {
    await served.close();
    h.close();
  });

  it("every page fits a default client; the tokens give every backup once", async () => {
    const got: string[] = [];
    let token = "";
    let pagesRead = 0;
    do {
      const r = await served.api.listBackups({ pageToken: token });
      assert.ok(r.backups.length > 0 && r.backups.length < 30, `a short page, not empty (${r.backups.length})`);
      got.push(...r.backups.map((b) => b.id));
      token = r.nextPageToken;
      pagesRead++;
    } while (token);
    assert.equal(got.length, 30);
    assert.deepEqual(new Set(got), ids);
    assert.ok(pagesRead >= Math.ceil((30 * 265_000) / PAGE_BYTES), `${pagesRead} pages`);
  });
});
