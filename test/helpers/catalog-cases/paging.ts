/**
 * Paging conformance cases, run against every Catalog store (the runners in this folder): paged listings
 * of backups and jobs tried as a control plane pages them, with items created, deleted or moved out of
 * the filter between pages. An item that exists (and matches) throughout is listed exactly once; pages
 * are in (created_at DESC, id DESC) order, ties broken by id; a token altered, issued for another
 * filter or listing, or by another catalog (another paging key) is a RangeError (→ INVALID_ARGUMENT);
 * policies and protection records page by their keys with the same guarantees.
 *
 * `open()` must return a new, empty catalog with its own paging key each time; the cases close what
 * they open.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { describe, it } from "node:test";
import type { Catalog, Page } from "../../../src/coordinator/catalog/catalog";
import type { Backup, BackupFilter, JobFilter, JobRecord } from "../../../src/coordinator/model";
import { type ProtectionRecord, volumeKey } from "../../../src/coordinator/policy/model";
import { BackupStatus, JobKind, JobState } from "../../../src/gen/rbdbackup/v1/backup_service";
import { Policy } from "../../../src/gen/rbdbackup/v1/policy";

const T0 = Date.UTC(2026, 11, 1, 12, 0, 0);

export function pagingBackup(createdAt: number, o: Partial<Backup> = {}): Backup {
  return {
    id: randomUUID(),
    volume: { cluster: "site-a", pool: "rbd", namespace: "", image: "vol-1" },
    volumeId: "",
    volumeMetadata: {},
    location: { cluster: "site-b", pool: "backups", namespace: "" },
    locationFsid: "",
    status: BackupStatus.BACKUP_STATUS_AVAILABLE,
    baseImage: "vol-1.backup.x",
    snapshot: "",
    incremental: false,
    parentSnapshot: "",
    forcedFullReason: "",
    sizeBytes: 1 << 20,
    dataBytesSent: 0,
    zeroBytes: 0,
    transferSeconds: 0,
    jobId: "",
    createdAt: new Date(createdAt),
    completedAt: undefined,
    error: "",
    warnings: [],
    clones: [],
    integrity: undefined,
    policy: "",
    ...o,
  };
}

export function pagingJob(createdAt: number, o: Partial<JobRecord> = {}): JobRecord {
  return {
    id: randomUUID(),
    kind: JobKind.JOB_KIND_BACKUP,
    state: JobState.JOB_STATE_QUEUED,
    backupId: randomUUID(),
    volume: { cluster: "site-a", pool: "rbd", namespace: "", image: "vol-1" },
    idempotencyKey: "",
    fingerprint: "",
    operation: { kind: "delete" },
    attempts: 0,
    maxAttempts: 3,
    errorCode: "",
    errorMessage: "",
    agentId: "",
    waitingReason: "",
    createdAt,
    startedAt: 0,
    finishedAt: 0,
    nextAttemptAt: 0,
    lease: null,
    cancelRequested: false,
    locks: [],
    execCluster: "site-a",
    peerCluster: "",
    result: null,
    warnings: [],
    fence: [],
    ...o,
  };
}

/** Follows a listing to its end; `between(pageNo)` runs after each page (as a control plane's world moves on). */
function pageAll<T>(list: (token: string) => Page<T>, between: (n: number) => void = () => {}): T[][] {
  const pages: T[][] = [];
  let token = "";
  for (let n = 0; n < 1000; n++) {
    const p = list(token);
    pages.push(p.items);
    if (!p.next) return pages;
    between(n);
    token = p.next;
  }
  assert.fail("the listing did not end within 1000 pages");
}

/** Each of `throughout` listed exactly once, nothing listed twice. */
function assertOnceEach(listed: string[], throughout: string[], what: string): void {
  const seen = new Map<string, number>();
  for (const id of listed) seen.set(id, (seen.get(id) ?? 0) + 1);
  const twice = [...seen].filter(([, n]) => n > 1).map(([id]) => id);
  assert.deepEqual(twice, [], `${what}: listed twice`);
  const missing = throughout.filter((id) => !seen.has(id));
  assert.deepEqual(missing, [], `${what}: existed throughout but never listed`);
}

/** Orders (createdAt, id) pairs as the listings do: newest first, ties by id descending. */
const byListingOrder = (a: { t: number; id: string }, b: { t: number; id: string }) =>
  b.t - a.t || (a.id < b.id ? 1 : a.id > b.id ? -1 : 0);

/** A token with one character of its payload (or signature) changed. */
function tamper(token: string, at: "payload" | "signature"): string {
  const i = at === "payload" ? 2 : token.length - 3;
  const c = token[i] === "A" ? "B" : "A";
  return token.slice(0, i) + c + token.slice(i + 1);
}

export function pagingCases(open: () => Catalog): void {
  const withCatalog = (f: (c: Catalog) => void) => () => {
    const c = open();
    try {
      f(c);
    } finally {
      c.close();
    }
  };
  const backups =
    (c: Catalog, f: BackupFilter, size = 10) =>
    (t: string) =>
      c.listBackups(f, size, t);
  const jobs =
    (c: Catalog, f: JobFilter, size = 10) =>
    (t: string) =>
      c.listJobs(f, size, t);

  describe("paging: backups", () => {
    it(
      "a backup created between two pages: none of those existing throughout repeated or skipped",
      withCatalog((c) => {
        const old = Array.from({ length: 35 }, (_, i) => pagingBackup(T0 + i * 1000));
        for (const b of old) c.insertBackup(b);
        const created: string[] = [];
        const pages = pageAll(backups(c, { excludeDeleted: true }), (n) => {
          // A newer one (before the cursor: offsets would repeat an item) and one among those not yet listed.
          const newer = pagingBackup(T0 + 100_000 + n);
          const among = pagingBackup(T0 + 5_500 + n);
          c.insertBackup(newer);
          c.insertBackup(among);
          created.push(newer.id, among.id);
        });
        const listed = pages.flat().map((b) => b.id);
        assertOnceEach(
          listed,
          old.map((b) => b.id),
          "created between pages",
        );
        assert.ok(listed.length >= 35 && pages.length >= 4, `pages: ${pages.map((p) => p.length)}`);
      }),
    );

    it(
      "a backup deleted between pages hides no live one (the API's default filter: all but DELETED)",
      withCatalog((c) => {
        const all = Array.from({ length: 30 }, (_, i) => pagingBackup(T0 + i * 1000));
        for (const b of all) c.insertBackup(b);
        const gone = new Set<string>();
        const pages = pageAll(backups(c, { excludeDeleted: true }), (n) => {
          if (n > 0) return;
          // Two of the first page and one not yet listed.
          for (const b of [all[29], all[27], all[5]] as Backup[]) {
            c.updateBackup({ ...b, status: BackupStatus.BACKUP_STATUS_DELETED });
            gone.add(b.id);
          }
        });
        const listed = pages.flat().map((b) => b.id);
        assertOnceEach(
          listed,
          all.filter((b) => !gone.has(b.id)).map((b) => b.id),
          "deleted between pages",
        );
        assert.ok(!listed.includes((all[5] as Backup).id), "deleted before its page: not listed");
      }),
    );

    it(
      "pages are newest first; equal created_at is ordered by id; a filter pages within itself",
      withCatalog((c) => {
        const made: Array<{ t: number; id: string; image: string }> = [];
        for (let i = 0; i < 24; i++) {
          // Three instants only: most neighbours tie.
          const t = T0 + (i % 3) * 1000;
          const image = i % 2 ? "vol-odd" : "vol-even";
          const b = pagingBackup(t, { volume: { cluster: "site-a", pool: "rbd", namespace: "", image } });
          c.insertBackup(b);
          made.push({ t, id: b.id, image });
        }
        const listed = pageAll(backups(c, {}, 5))
          .flat()
          .map((b) => ({ t: (b.createdAt as Date).getTime(), id: b.id }));
        assert.deepEqual(listed, made.map(({ t, id }) => ({ t, id })).sort(byListingOrder));
        const odd = pageAll(backups(c, { cluster: "site-a", pool: "rbd", image: "vol-odd" }, 4))
          .flat()
          .map((b) => b.id);
        assert.deepEqual(
          odd,
          made
            .filter((m) => m.image === "vol-odd")
            .sort(byListingOrder)
            .map((m) => m.id),
        );
      }),
    );

    it(
      "each filter pages over exactly its backups (status, location, policy, volume id)",
      withCatalog((c) => {
        const made: Backup[] = [];
        for (let i = 0; i < 40; i++) {
          const b = pagingBackup(T0 + i * 10, {
            status: i % 4 === 0 ? BackupStatus.BACKUP_STATUS_FAILED : BackupStatus.BACKUP_STATUS_AVAILABLE,
            location: { cluster: i % 2 ? "site-b" : "site-c", pool: "backups", namespace: "" },
            policy: i % 5 === 0 ? "nightly" : "",
            volumeId: i % 3 === 0 ? "cinder-1" : "",
          });
          c.insertBackup(b);
          made.push(b);
        }
        const want = (p: (b: Backup) => boolean) =>
          made
            .filter(p)
            .map((b) => b.id)
            .reverse();
        const got = (f: BackupFilter) =>
          pageAll(backups(c, f, 3))
            .flat()
            .map((b) => b.id);
        assert.deepEqual(
          got({ statuses: [BackupStatus.BACKUP_STATUS_FAILED] }),
          want((b) => b.status === BackupStatus.BACKUP_STATUS_FAILED),
        );
        assert.deepEqual(
          got({ locationCluster: "site-b", excludeDeleted: true }),
          want((b) => b.location?.cluster === "site-b"),
        );
        assert.deepEqual(
          got({ policy: "nightly" }),
          want((b) => b.policy === "nightly"),
        );
        assert.deepEqual(
          got({ volumeId: "cinder-1" }),
          want((b) => b.volumeId === "cinder-1"),
        );
      }),
    );

    it(
      "a token altered, from another filter, another listing or another catalog is a RangeError",
      withCatalog((c) => {
        for (let i = 0; i < 5; i++) c.insertBackup(pagingBackup(T0 + i));
        for (let i = 0; i < 5; i++) c.insertJob(pagingJob(T0 + i));
        const f: BackupFilter = { cluster: "site-a", excludeDeleted: true };
        const token = c.listBackups(f, 2, "").next;
        assert.notEqual(token, "");
        assert.equal(c.listBackups(f, 2, token).items.length, 2, "the token itself is good");
        for (const bad of [
          tamper(token, "payload"),
          tamper(token, "signature"),
          `${token}x`,
          token.split(".")[0] as string,
          "garbage",
          Buffer.from("o:2").toString("base64url"),
        ])
          assert.throws(() => c.listBackups(f, 2, bad), RangeError, bad);
        assert.throws(() => c.listBackups({ cluster: "site-b", excludeDeleted: true }, 2, token), RangeError);
        assert.throws(() => c.listBackups({ cluster: "site-a" }, 2, token), RangeError, "another status filter");
        assert.throws(() => c.listJobs({}, 2, token), RangeError, "a backups token for jobs");
        const jobToken = c.listJobs({}, 2, "").next;
        assert.throws(() => c.listBackups(f, 2, jobToken), RangeError, "a jobs token for backups");
        // Another catalog (another key) refuses it; a runner whose open() reaches the same store (one
        // database per test) gives the same key, and then the token is good, as for two coordinators.
        const other = open();
        try {
          for (let i = 0; i < 5; i++) other.insertBackup(pagingBackup(T0 + i));
          if (other.pagingKey.equals(c.pagingKey)) assert.equal(other.listBackups(f, 2, token).items.length, 2);
          else {
            assert.throws(() => other.listBackups(f, 2, token), RangeError, "another catalog's token");
            assert.throws(() => c.listBackups(f, 2, other.listBackups(f, 2, "").next), RangeError);
          }
        } finally {
          other.close();
        }
      }),
    );

    it(
      "a token stays good after the listing changed and for another page size",
      withCatalog((c) => {
        const all = Array.from({ length: 12 }, (_, i) => pagingBackup(T0 + i * 1000));
        for (const b of all) c.insertBackup(b);
        const f: BackupFilter = { excludeDeleted: true };
        const first = c.listBackups(f, 4, "");
        // The last item of the page is itself deleted: the next page still starts right after it.
        const last = first.items[3] as Backup;
        c.updateBackup({ ...last, status: BackupStatus.BACKUP_STATUS_DELETED });
        const rest = c.listBackups(f, 100, first.next);
        assert.deepEqual(
          rest.items.map((b) => b.id),
          all
            .slice(0, 8)
            .reverse()
            .map((b) => b.id),
        );
        assert.equal(rest.next, "");
      }),
    );
  });

  describe("paging: jobs", () => {
    it(
      "a job created between pages, and jobs leaving the state filter: each job there throughout listed once",
      withCatalog((c) => {
        const old = Array.from({ length: 33 }, (_, i) => pagingJob(T0 + i * 1000));
        for (const j of old) c.insertJob(j);
        const all = pageAll(jobs(c, {}), (n) => {
          c.insertJob(pagingJob(T0 + 100_000 + n));
          c.insertJob(pagingJob(T0 + 2_500 + n));
        });
        assertOnceEach(
          all.flat().map((j) => j.id),
          old.map((j) => j.id),
          "jobs created between pages",
        );

        // QUEUED jobs, while some of them start (they leave the filter) and new ones are queued.
        const queued = old.filter((_, i) => i % 2 === 0);
        for (const j of old) if (!queued.includes(j)) c.updateJob({ ...j, state: JobState.JOB_STATE_SUCCEEDED });
        const started = new Set<string>();
        const pages = pageAll(jobs(c, { state: JobState.JOB_STATE_QUEUED }, 4), (n) => {
          const j = queued[queued.length - 1 - n * 3];
          if (j) {
            c.updateJob({ ...j, state: JobState.JOB_STATE_RUNNING });
            started.add(j.id);
          }
          c.insertJob(pagingJob(T0 + 200_000 + n));
        });
        assertOnceEach(
          pages.flat().map((j) => j.id),
          queued.filter((j) => !started.has(j.id)).map((j) => j.id),
          "queued jobs while some start",
        );
      }),
    );

    it(
      "jobs with equal created_at are ordered by id; kind and backup filters page within themselves",
      withCatalog((c) => {
        const b = randomUUID();
        const made = Array.from({ length: 15 }, (_, i) =>
          pagingJob(T0 + (i % 2) * 1000, {
            kind: i % 3 === 0 ? JobKind.JOB_KIND_DELETE : JobKind.JOB_KIND_BACKUP,
            backupId: i < 6 ? b : randomUUID(),
          }),
        );
        for (const j of made) c.insertJob(j);
        const order = (xs: JobRecord[]) =>
          xs
            .map((j) => ({ t: j.createdAt, id: j.id }))
            .sort(byListingOrder)
            .map((x) => x.id);
        const got = (f: JobFilter) =>
          pageAll(jobs(c, f, 2))
            .flat()
            .map((j) => j.id);
        assert.deepEqual(got({}), order(made));
        assert.deepEqual(
          got({ kind: JobKind.JOB_KIND_DELETE }),
          order(made.filter((j) => j.kind === JobKind.JOB_KIND_DELETE)),
        );
        assert.deepEqual(got({ backupId: b }), order(made.filter((j) => j.backupId === b)));
        // The API passes 0 for "any state/kind": the same listing, so the same tokens.
        const t = c.listJobs({}, 2, "").next;
        assert.equal(c.listJobs({ state: 0, kind: 0, backupId: "" }, 2, t).items.length, 2);
      }),
    );

    it(
      "a jobs token altered, or from another filter or catalog, is a RangeError",
      withCatalog((c) => {
        for (let i = 0; i < 5; i++) c.insertJob(pagingJob(T0 + i));
        const f: JobFilter = { state: JobState.JOB_STATE_QUEUED };
        const token = c.listJobs(f, 2, "").next;
        assert.equal(c.listJobs(f, 2, token).items.length, 2);
        for (const bad of [tamper(token, "payload"), tamper(token, "signature"), "x.y"])
          assert.throws(() => c.listJobs(f, 2, bad), RangeError, bad);
        assert.throws(() => c.listJobs({ state: JobState.JOB_STATE_RUNNING }, 2, token), RangeError);
        const other = open();
        try {
          if (!other.pagingKey.equals(c.pagingKey)) assert.throws(() => other.listJobs(f, 2, token), RangeError);
        } finally {
          other.close();
        }
      }),
    );
  });
}

/**
 * Paging of policies and protection records (by name; by (policy, volume key)). Separate from pagingCases
 * while a store still pages them by offset (pg/policies.ts): add to CATALOG_CASES once it pages by key.
 */
export function policyPagingCases(open: () => Catalog): void {
  const withCatalog = (f: (c: Catalog) => void) => () => {
    const c = open();
    try {
      f(c);
    } finally {
      c.close();
    }
  };
  describe("paging: policies and protection records", () => {
    const policy = (name: string) =>
      Policy.fromPartial({
        name,
        selector: { volumes: [{ cluster: "site-a", pool: "rbd", namespace: "", image: "v" }] },
        destination: { cluster: "site-b" },
        schedule: { intervalSeconds: 60 },
        retention: { keepLast: 1 },
        revision: 1,
        createdAt: new Date(T0),
      });
    const record = (p: string, image: string, cluster = "site-a"): ProtectionRecord => ({
      policy: p,
      volume: { cluster, pool: "rbd", namespace: "", image },
      source: "explicit",
      nextSlotAt: 1,
      nextRunAt: 2,
      lastSlotAt: 0,
      lastJobId: "",
      lastError: "",
      consecutiveFailures: 0,
      missedRuns: 0,
      pausedReason: "",
      lastSeenAt: 0,
      createdAt: 0,
    });

    it(
      "policies created and deleted between pages: each one there throughout listed once, by name",
      withCatalog((c) => {
        const names = Array.from({ length: 12 }, (_, i) => `p-${String(i).padStart(2, "0")}`);
        for (const n of names) c.policies.insertPolicy(policy(n));
        const gone = new Set<string>();
        const pages = pageAll(
          (t) => c.policies.listPolicies(3, t),
          (n) => {
            c.policies.insertPolicy(policy(`a-${n}`)); // before the cursor
            c.policies.insertPolicy(policy(`q-${n}`)); // after it
            // One already listed and one not yet.
            for (const d of [names[n * 3 + 1], names[n * 3 + 5]]) {
              if (!d) continue;
              c.policies.deletePolicy(d);
              gone.add(d);
            }
          },
        );
        const listed = pages.flat().map((p) => p.name);
        assertOnceEach(
          listed,
          names.filter((n) => !gone.has(n)),
          "policies",
        );
        assert.deepEqual(listed, [...listed].sort(), "by name");
        const token = c.policies.listPolicies(1, "").next;
        assert.throws(() => c.policies.listPolicies(1, tamper(token, "payload")), RangeError);
        assert.throws(() => c.listBackups({}, 1, token), RangeError, "a policies token for backups");
      }),
    );

    it(
      "protection records page by (policy, volume) within their filter; tokens bound to the filter",
      withCatalog((c) => {
        const made: ProtectionRecord[] = [];
        for (const p of ["a", "b"]) c.policies.insertPolicy(policy(p));
        for (const p of ["a", "b"])
          for (let i = 0; i < 7; i++) made.push(record(p, `v${i}`, i % 2 ? "site-a" : "site-z"));
        for (const r of made) c.policies.upsertProtection(r);
        const keys = (rs: ProtectionRecord[]) => rs.map((r) => `${r.policy} ${volumeKey(r.volume)}`);
        const all = pageAll(
          (t) => c.policies.listProtection({}, 3, t),
          (n) => c.policies.upsertProtection(record("a", `new-${n}`)),
        ).flat();
        assertOnceEach(keys(all), keys(made), "protection records");
        assert.deepEqual(keys(all), [...keys(all)].sort(), "by (policy, volume key)");
        const z = pageAll((t) => c.policies.listProtection({ cluster: "site-z" }, 2, t)).flat();
        assert.deepEqual(keys(z), keys(made.filter((r) => r.volume.cluster === "site-z")).sort());
        const token = c.policies.listProtection({ policy: "a" }, 2, "").next;
        assert.equal(c.policies.listProtection({ policy: "a" }, 2, token).items.length, 2);
        assert.throws(() => c.policies.listProtection({ policy: "b" }, 2, token), RangeError);
        assert.throws(() => c.policies.listProtection({ policy: "a" }, 2, tamper(token, "signature")), RangeError);
      }),
    );
  });
}
