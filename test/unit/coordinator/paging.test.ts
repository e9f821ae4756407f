/**
 * Listing pages bounded by bytes (src/coordinator/api/paging.ts): a page stops once its items pass the
 * budget (never before its first), its token goes on right after the last item given, and following
 * the tokens gives every item once. Through a real server: ListBackups of backups carrying the most
 * metadata allowed answers a client with gRPC's default 4 MiB receive limit (it got RESOURCE_EXHAUSTED),
 * a scoped client too (its scope guard reads pages on: api/scoped.ts).
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { Metadata } from "nice-grpc";
import { boundedPage, PAGE_BYTES } from "../../../src/coordinator/api/paging";
import { Audit } from "../../../src/coordinator/audit";
import { CALLER_METADATA_KEY } from "../../../src/coordinator/authz";
import type { Page } from "../../../src/coordinator/catalog/catalog";
import { ScopeStore } from "../../../src/coordinator/scopes";
import { BackupStatus } from "../../../src/gen/rbdbackup/v1/backup_service";
import { type ApiServer, serveApi } from "./api-server";
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
  let dir: string;
  const ids = new Set<string>();
  const seen = new Set<string>();
  const caller = (role: string, name: string) => ({
    metadata: Metadata({
      [CALLER_METADATA_KEY]: JSON.stringify({ via: "certificate", identity: { kind: "client", role, name } }),
    }),
  });
  /** A scoped client: sees site a's volumes in pool rbd (v1) kept in b/backups. */
  const cinder = caller("operator", "cinder");

  before(async () => {
    h = new Harness();
    dir = mkdtempSync(path.join(tmpdir(), "rbdbackup-paging-"));
    const scopes = path.join(dir, "scopes");
    writeFileSync(scopes, "client/cinder a/rbd backups:b/backups\n");
    const deps = { catalog: h.catalog, sessions: h.sessions, scheduler: h.scheduler, log: h.log, maxAttempts: 3 };
    served = await serveApi(deps, { scopes: new ScopeStore(scopes), audit: new Audit(h.log) });
    // 64 values of 4096 characters: ~265 KB a backup; 30 of them ~7.9 MB, twice a default client's limit.
    // Every other one is of a volume the scoped client does not see (pool "other").
    const meta = Object.fromEntries(Array.from({ length: 64 }, (_, i) => [`k${i}`, "m".repeat(4096)]));
    for (let i = 0; i < 60; i++) {
      const v = i % 2 ? vol("v1") : { ...vol("v1"), pool: "other" };
      const b = { ...newBackup(v, "b", h.t), volumeMetadata: meta, status: BackupStatus.BACKUP_STATUS_AVAILABLE };
      h.advance(1);
      h.catalog.insertBackup(b);
      ids.add(b.id);
      if (i % 2) seen.add(b.id);
    }
  });
  after(async () => {
    await served.close();
    h.close();
    rmSync(dir, { recursive: true, force: true });
  });

  for (const [who, opts, want] of [
    ["an unscoped client", caller("admin", "root"), () => ids],
    ["a scoped client (its guard reads pages on until one is full)", cinder, () => seen],
  ] as const) {
    it(`${who}: every page fits a default client; the tokens give every backup once`, async () => {
      const got: string[] = [];
      let token = "";
      let pages = 0;
      do {
        const r = await served.api.listBackups({ pageToken: token }, opts);
        assert.ok(
          r.backups.length > 0 && r.backups.length < want().size,
          `a short page, not empty (${r.backups.length})`,
        );
        got.push(...r.backups.map((b) => b.id));
        token = r.nextPageToken;
        pages++;
      } while (token);
      assert.equal(got.length, want().size);
      assert.deepEqual(new Set(got), want());
      assert.ok(pages >= Math.ceil((want().size * 265_000) / PAGE_BYTES), `${pages} pages`);
    });
  }
});
