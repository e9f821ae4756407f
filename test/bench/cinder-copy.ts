/**
 * The Cinder driver's copy of a volume that is not RBD (deploy/openstack/rbdbackup_cinder/copy.py through
 * rbdbackup_client/relay.py: Python reads the file in 4 MiB chunks, leaves all-zero ones out, pipes the rbd
 * diff to a child that streams it over ImportBackup to the coordinator, which relays it to site-b's agent)
 * against `rbd import --no-progress FILE backups/IMAGE` on site-b (the CLI writing the same file into the
 * same pool, also skipping zeros), alternating who goes first; and, to tell the Python side from the
 * coordinator's relay, the same rbd diff stream (made once by copy.send into a file) sent by this Node
 * process through ImportBackup. The file is --mib MiB with random data in every other 4 MiB chunk (half
 * zeros). Prints each side's seconds and the ratios; figures only.
 *
 *   npm run build:python && node dist/test/bench/cinder-copy.js [--mib 1024] [--runs 3] [--message-kib 1024]
 *
 * --message-kib: the size of the Node contender's data messages (the relay child sends 1 MiB ones).
 */
import { execFile, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { closeSync, createReadStream, mkdtempSync, openSync, rmSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { tlsFor } from "../helpers/agents";
import { deploy } from "../helpers/coordinator";
import { rbd, repoRoot, uniqueName } from "../helpers/lab";
import { arg, median } from "./measure";

const execFileP = promisify(execFile);
const MiB = 1 << 20;
const CHUNK = 4 * MiB;

/** copy.send of FILE into OUT (the stream the relay sends). */
const PY_STREAM = `
import sys
from rbdbackup_cinder import copy
with open(sys.argv[1], "rb") as f, open(sys.argv[2], "wb") as out:
    copy.send(f, int(sys.argv[3]), out)
`;

/** The Python side: one copy of FILE through the relay; prints {"seconds", "backup_id"}. */
const PY = `
import json, sys, time
from rbdbackup_client import ClientConfig, backup_service_pb2 as pb, common_pb2, relay
from rbdbackup_cinder import copy
cfg = json.loads(sys.argv[1])
length = int(sys.argv[3])
header = pb.ImportBackupHeader(
    volume=common_pb2.VolumeRef(cluster="site-b", pool="cinder-copies", image=sys.argv[4]),
    location=common_pb2.BackupLocation(cluster="site-b", pool="backups"),
    format=pb.DIFF_FORMAT_RBD_V1)
t = time.monotonic()
proc = relay.start("import", ClientConfig(**cfg), header, 600)
with open(sys.argv[2], "rb") as f:
    sent = copy.send(f, length, proc.stdin)
proc.stdin.close()
out = proc.stdout.read()
relay.wait(proc)
job = relay.job_of(relay.answer(out, proc))
print(json.dumps({"seconds": time.monotonic() - t, "backup_id": job.backup_id, "sent": sent}))
`;

function python(args: string[], code = PY): Promise<string> {
  return new Promise((resolve, reject) => {
    const p = spawn("/usr/bin/python3", ["-c", code, ...args], {
      env: { ...process.env, PYTHONPATH: path.join(repoRoot, "dist/python") },
      stdio: ["ignore", "pipe", "inherit"],
    });
    let out = "";
    p.stdout.on("data", (d: Buffer) => {
      out += d.toString();
    });
    const timer = setTimeout(() => p.kill("SIGKILL"), 600_000);
    p.on("error", reject);
    p.on("close", (code) => {
      clearTimeout(timer);
      code === 0 ? resolve(out) : reject(new Error(`the Python copy exited ${code}: ${out}`));
    });
  });
}

async function main(): Promise<void> {
  const mib = Number(arg("mib", "1024"));
  const runs = Number(arg("runs", "3"));
  const messageBytes = Number(arg("message-kib", "1024")) * 1024;
  const dir = mkdtempSync(path.join(tmpdir(), "rbdbackup-cinder-copy-"));
  const file = path.join(dir, "volume");
  const fd = openSync(file, "w");
  for (let off = 0; off < mib * MiB; off += CHUNK)
    writeSync(fd, off % (2 * CHUNK) === 0 ? randomBytes(CHUNK) : Buffer.alloc(CHUNK), 0, CHUNK, off);
  closeSync(fd);
  await execFileP("bash", [path.join(repoRoot, "deploy/openstack/build-python.sh")], { timeout: 120_000 });
  const d = await deploy();
  const tls = tlsFor("test-client");
  const cfg = JSON.stringify({
    addresses: [d.coord.address],
    ca_file: tls.ca,
    cert_file: tls.cert,
    key_file: tls.key,
  });
  const stream = path.join(dir, "stream");
  await python([file, stream, String(mib * MiB)], PY_STREAM);
  const ours: number[] = [];
  const cli: number[] = [];
  const node: number[] = [];
  try {
    for (let r = 0; r < runs; r++) {
      for (const who of r % 2 ? ["cli", "node", "ours"] : ["ours", "node", "cli"]) {
        const image = uniqueName("bench-copy");
        if (who === "node") {
          const t = process.hrtime.bigint();
          const job = await d.client.importBackup(
            (async function* () {
              yield {
                body: {
                  $case: "header" as const,
                  value: {
                    volume: { cluster: "site-b", pool: "cinder-copies", namespace: "", image },
                    location: { cluster: "site-b", pool: "backups", namespace: "" },
                    volumeId: "",
                    volumeMetadata: {},
                    parentBackupId: "",
                    idempotencyKey: "",
                    format: 1,
                    takenAt: undefined,
                  },
                },
              };
              for await (const chunk of createReadStream(stream, { highWaterMark: messageBytes }))
                yield { body: { $case: "data" as const, value: chunk as Buffer } };
            })(),
          );
          node.push(Number(process.hrtime.bigint() - t) / 1e9);
          await d.client.deleteBackup({ backupId: job.backupId, idempotencyKey: "" });
        } else if (who === "ours") {
          const got = JSON.parse(await python([cfg, file, String(mib * MiB), image]));
          ours.push(got.seconds);
          await d.client.deleteBackup({ backupId: got.backup_id, idempotencyKey: "" });
        } else {
          const t = process.hrtime.bigint();
          await rbd("site-b", ["import", "--no-progress", file, `backups/${image}`]);
          cli.push(Number(process.hrtime.bigint() - t) / 1e9);
          await rbd("site-b", ["rm", "--no-progress", `backups/${image}`]);
        }
      }
    }
  } finally {
    await d.stop();
    rmSync(dir, { recursive: true, force: true });
  }
  const o = median(ours);
  const c = median(cli);
  const n = median(node);
  const list = (xs: number[]) => xs.map((x) => x.toFixed(2)).join(", ");
  console.log(
    `cinder copy of a ${mib} MiB file (half zeros), ${runs} rounds: ours ${o.toFixed(2)} s (${(mib / o).toFixed(0)} MiB/s of file) [${list(ours)}], rbd import ${c.toFixed(2)} s [${list(cli)}]: ${(c / o).toFixed(2)}× the CLI; the same stream from Node through ImportBackup (${messageBytes / 1024} KiB messages) ${n.toFixed(2)} s [${list(node)}]: ${(c / n).toFixed(2)}× the CLI`,
  );
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
