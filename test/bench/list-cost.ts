/**
 * What one list call's page costs the coordinator outside gRPC (no Ceph, no server): a SQLite catalog in
 * memory with 100 backups, then per backup, in µs: getBackup (SQL + parse), JSON.parse alone, the parse
 * with ts-proto's fromJSON, structuredClone of a parsed one, and ts-proto's encode of one for the answer;
 * and a whole listBackups page of 100. Figures only.
 *
 *   node dist/test/bench/list-cost.js
 */
import { SqliteCatalog } from "../../src/coordinator/catalog/sqlite";
import { Backup } from "../../src/gen/rbdbackup/v1/backup_service";
import { pagingBackup } from "../helpers/catalog-cases/paging";

const catalog = new SqliteCatalog(":memory:");
const ids: string[] = [];
for (let i = 0; i < 100; i++) {
  const b = pagingBackup(Date.now() - i * 1000, { volumeMetadata: { owner: "tenant-1", k2: "v2" }, warnings: ["w"] });
  catalog.insertBackup(b);
  ids.push(b.id);
}
const one = catalog.getBackup(ids[0] as string) as Backup;
const doc = JSON.stringify(Backup.toJSON(one));

function time(label: string, f: (i: number) => unknown, n = 20_000): void {
  for (let i = 0; i < 2_000; i++) f(i);
  const t = process.hrtime.bigint();
  for (let i = 0; i < n; i++) f(i);
  console.log(`${label.padEnd(34)} ${(Number(process.hrtime.bigint() - t) / 1000 / n).toFixed(2)} µs`);
}

console.log(`list-cost: 100 backups in SQLite (memory), a backup's document ${doc.length} bytes`);
time("getBackup (SQL + parse)", (i) => catalog.getBackup(ids[i % 100] as string));
time("JSON.parse", () => JSON.parse(doc));
time("JSON.parse + Backup.fromJSON", () => Backup.fromJSON(JSON.parse(doc)));
time("structuredClone of a parsed backup", () => structuredClone(one));
time("Backup.encode (the answer)", () => Backup.encode(one).finish());
time("listBackups, a page of 100", () => catalog.listBackups({}, 100, ""), 2_000);
catalog.close();
