/**
 * Page tokens through the public API of a real coordinator process (SQLite catalog, loopback): ListBackups
 * pages follow their tokens, and a token altered or used with another filter is INVALID_ARGUMENT naming
 * page_token — never INTERNAL (an SQL error) nor a silently different page. The catalog is seeded in the
 * file before the coordinator starts.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { ClientError, Status } from "nice-grpc-common";
import { SqliteCatalog } from "../../../src/coordinator/catalog/sqlite";
import type { ListBackupsRequest } from "../../../src/gen/rbdbackup/v1/backup_service";
import { type CoordinatorProcess, startCoordinatorProcess } from "../../../src/lab/coordinator-process";
import { pagingBackup } from "../../helpers/catalog-cases/paging";

const request = (o: Partial<ListBackupsRequest>): ListBackupsRequest => ({
  cluster: "",
  pool: "",
  image: "",
  volumeId: "",
  locationCluster: "",
  status: 0,
  pageSize: 0,
  pageToken: "",
  ...o,
});

async function statusOf(p: Promise<unknown>): Promise<{ code: string; details: string }> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof ClientError, `a gRPC error, not ${e}`);
    return { code: Status[e.code], details: e.details };
  }
  assert.fail("the call succeeded");
}

describe("ListBackups page tokens through the API", () => {
  const dir = mkdtempSync(path.join(tmpdir(), "rbdbackup-paging-api-"));
  let coord: CoordinatorProcess;
  const ids: string[] = [];

  before(async () => {
    const catalog = new SqliteCatalog(path.join(dir, "catalog.sqlite"));
    for (let i = 0; i < 7; i++) {
      const b = pagingBackup(Date.UTC(2026, 11, 1) + i * 1000);
      catalog.insertBackup(b);
      ids.unshift(b.id);
    }
    catalog.close();
    coord = await startCoordinatorProcess({ insecure: true, dir });
  });

  after(async () => {
    await coord?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it("pages follow their tokens; a tampered or misplaced token is INVALID_ARGUMENT naming page_token", async () => {
    const c = coord.client;
    const got: string[] = [];
    let token = "";
    do {
      const r = await c.listBackups(request({ cluster: "site-a", pageSize: 3, pageToken: token }));
      got.push(...r.backups.map((b) => b.id));
      token = r.nextPageToken;
    } while (token);
    assert.deepEqual(got, ids);

    const first = await c.listBackups(request({ cluster: "site-a", pageSize: 3 }));
    const t = first.nextPageToken;
    const flipped = `${t.slice(0, 2)}${t[2] === "A" ? "B" : "A"}${t.slice(3)}`;
    for (const bad of [flipped, `${t}0`, "garbage", Buffer.from("o:3").toString("base64url")]) {
      const e = await statusOf(c.listBackups(request({ cluster: "site-a", pageSize: 3, pageToken: bad })));
      assert.equal(e.code, "INVALID_ARGUMENT", e.details);
      assert.match(e.details, /^page_token /);
    }
    const other = await statusOf(c.listBackups(request({ cluster: "site-b", pageSize: 3, pageToken: t })));
    assert.equal(other.code, "INVALID_ARGUMENT", "a token of another filter");
    const jobs = await statusOf(c.listJobs({ state: 0, kind: 0, backupId: "", pageSize: 3, pageToken: t }));
    assert.equal(jobs.code, "INVALID_ARGUMENT", "a backups token for ListJobs");
  });
});
