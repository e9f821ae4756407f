/**
 * The destination's journal on disk (agents/transfer/journal.ts): entries written, replaced, listed and
 * removed; files that are not entries (torn, null, another shape, another release's format, a leftover
 * .tmp) are skipped so that recovery at start never fails on them, and each (but the .tmp) is told.
 */
import assert from "node:assert/strict";
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, describe, it } from "node:test";
import { JOURNAL_FORMAT, Journal, type JournalEntry, type SkippedFile } from "../../../agents/transfer/journal";

const dirs: string[] = [];
after(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

const entry = (id: string, over: Partial<JournalEntry> = {}): JournalEntry => ({
  transferId: id,
  kind: 1,
  pool: "backups",
  namespace: "",
  image: `vol.${id}`,
  createdImage: true,
  startedAt: new Date(0).toISOString(),
  ...over,
});

async function journal(): Promise<Journal> {
  const d = await mkdtemp(path.join(tmpdir(), "rbdbackup-journal-"));
  dirs.push(d);
  return new Journal(d);
}

describe("Journal on disk", () => {
  it("writes, replaces, lists and removes entries", async () => {
    const j = await journal();
    await j.write(entry("a"));
    await j.write(entry("b"));
    await j.write(entry("a", { heldUntil: "2030-01-01T00:00:00.000Z" }));
    const byId = new Map((await j.list()).map((e) => [e.transferId, e]));
    assert.deepEqual([...byId.keys()].sort(), ["a", "b"]);
    assert.equal(byId.get("a")?.heldUntil, "2030-01-01T00:00:00.000Z", "replaced");
    await j.remove("a");
    await j.remove("missing");
    assert.deepEqual(
      (await j.list()).map((e) => e.transferId),
      ["b"],
    );
    assert.deepEqual((await readdir(j.dir)).sort(), ["b.json"], "no temporary file left");
  });

  it("skips files that are not entries: torn JSON, null, another shape, another format, a leftover .tmp — and says which", async () => {
    const d = await mkdtemp(path.join(tmpdir(), "rbdbackup-journal-"));
    dirs.push(d);
    const skipped: SkippedFile[] = [];
    const j = new Journal(d, (s) => skipped.push(s));
    await j.write(entry("good"));
    await writeFile(path.join(j.dir, "torn.json"), '{"transferId":"torn","po');
    await writeFile(path.join(j.dir, "null.json"), "null");
    await writeFile(path.join(j.dir, "shape.json"), JSON.stringify({ transferId: 7, pool: "backups" }));
    await writeFile(path.join(j.dir, "left.json.tmp"), JSON.stringify(entry("left")));
    await writeFile(path.join(j.dir, "newer.json"), JSON.stringify({ ...entry("newer"), format: 2 }));
    // Written before entries said their format: read as format 1.
    await writeFile(path.join(j.dir, "older.json"), JSON.stringify(entry("older")));
    assert.deepEqual((await j.list()).map((e) => e.transferId).sort(), ["good", "older"]);
    const said = new Map(skipped.map((s) => [path.basename(s.file), s]));
    assert.deepEqual([...said.keys()].sort(), ["newer.json", "null.json", "shape.json", "torn.json"]);
    assert.match(said.get("newer.json")?.reason ?? "", /format 2, not 1/);
    assert.equal(said.get("newer.json")?.image, "backups/vol.newer");
    assert.match(said.get("torn.json")?.reason ?? "", /unreadable/);
    assert.equal(said.get("shape.json")?.reason, "not a journal entry");
    // Told once per process, not at every listing.
    await j.list();
    assert.equal(skipped.length, 4);
  });

  it("an entry removed between the directory's listing and its read is simply gone, not told", async () => {
    const d = await mkdtemp(path.join(tmpdir(), "rbdbackup-journal-"));
    dirs.push(d);
    const skipped: SkippedFile[] = [];
    const j = new Journal(d, (s) => skipped.push(s));
    const ids = Array.from({ length: 200 }, (_, i) => `t${i}`);
    for (const id of ids) await j.write(entry(id));
    // Transfers ending while recovery lists: every entry removed as the listing reads.
    const listing = j.list();
    await Promise.all(ids.map((id) => j.remove(id)));
    await listing;
    assert.deepEqual(skipped, []);
  });

  it("entries carry their format on disk, and come back without it", async () => {
    const j = await journal();
    await j.write(entry("f"));
    assert.equal(JSON.parse(await readFile(path.join(j.dir, "f.json"), "utf8")).format, JOURNAL_FORMAT);
    assert.deepEqual(await j.list(), [entry("f")]);
  });
});
