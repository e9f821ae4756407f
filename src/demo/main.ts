/**
 * The README's main job, at this stage: bring up nothing itself (deploy/demo.sh starts the lab), then
 * exercise the addon on the two lab clusters — a volume with data on site-a, a snapshot, its diff
 * copied to site-b, verified byte for byte with `rbd export`.
 */
import { execFileSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import path from "node:path";
import { type Cluster, connect, libraryVersions } from "../../agents/ceph";

const MiB = 1 << 20;
const labDir = process.env.RBDBACKUP_LAB_DIR ?? "/tmp/rbdbackup-lab";

function lab(name: string): { conf: string; keyring: string; fsid: string } {
  return JSON.parse(readFileSync(path.join(labDir, name, "cluster.json"), "utf8"));
}

function exportSha(name: string, spec: string): string {
  const out = execFileSync("rbd", ["-c", lab(name).conf, "export", "--no-progress", spec, "-"], {
    maxBuffer: 1 << 30,
  });
  return createHash("sha256").update(out).digest("hex");
}

async function open(name: string): Promise<Cluster> {
  const l = lab(name);
  return connect({ conf: l.conf, clientId: "admin", keyring: l.keyring });
}

async function main(): Promise<void> {
  const t0 = Date.now();
  const v = libraryVersions();
  console.log(`rbdbackup demo — librados ${v.librados}, librbd ${v.librbd}`);
  const a = await open("site-a");
  const b = await open("site-b");
  console.log(`site-a fsid ${a.fsid()}\nsite-b fsid ${b.fsid()}`);
  const ioA = await a.openIoCtx("rbd");
  const ioB = await b.openIoCtx("backups");
  const name = `demo-${Date.now().toString(36)}`;
  await ioA.imageCreate(name, 64 * MiB);
  const src = await ioA.imageOpen(name);
  for (let i = 0; i < 16; i++) await src.write(randomBytes(MiB), i * 4 * MiB + 4096 * i);
  await src.snapCreate("s1");
  await src.close();
  const snap = await ioA.imageOpen(name, { snapshot: "s1" });
  const size = (await snap.stat()).size;
  await ioB.imageCreate(name, size);
  const dst = await ioB.imageOpen(name);
  let bytes = 0;
  for await (const batch of snap.diff({})) {
    await Promise.all(
      batch.map(async (e) => {
        if (!e.exists) return;
        const buf = Buffer.allocUnsafe(e.length);
        await snap.read(buf, e.offset);
        await dst.write(buf, e.offset);
        bytes += e.length;
      }),
    );
  }
  await dst.flush();
  await dst.snapCreate("s1");
  await dst.close();
  await snap.close();
  const same = exportSha("site-a", `rbd/${name}@s1`) === exportSha("site-b", `backups/${name}@s1`);
  console.log(`copied ${bytes / MiB} MiB of ${size / MiB} MiB (only allocated extents) site-a → site-b`);
  console.log(`verification (sha256 of rbd export on both sides): ${same ? "IDENTICAL" : "DIFFERENT"}`);
  for (const [io, n] of [
    [ioA, name],
    [ioB, name],
  ] as const) {
    const im = await io.imageOpen(n);
    await im.snapRemove("s1");
    await im.close();
    await io.imageRemove(n);
  }
  await ioA.close();
  await ioB.close();
  await a.close();
  await b.close();
  console.log(`done in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  if (!same) process.exit(1);
}

main().catch((e) => {
  console.error(e instanceof Error ? e.message : e);
  process.exit(1);
});
