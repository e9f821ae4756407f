/**
 * Test access to the lab clusters that test/run.sh started (deploy/lab/lab.sh). Tests never start or
 * stop clusters themselves: the suite starts them once per run.
 */
import { execFile, spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import path from "node:path";
import { promisify } from "node:util";
import { type Cluster, connect } from "../../agents/ceph";

const execFileP = promisify(execFile);

export interface LabCluster {
  name: string;
  fsid: string;
  monHost: string;
  conf: string;
  keyring: string;
  clientId: string;
  rbdbackupKeyring: string;
  capacityBytes: number;
}

export const labDir = process.env.RBDBACKUP_LAB_DIR ?? "/tmp/rbdbackup-lab";
export const repoRoot = path.resolve(__dirname, "../../..");

export function labCluster(name: string): LabCluster {
  const file = path.join(labDir, name, "cluster.json");
  try {
    return JSON.parse(readFileSync(file, "utf8")) as LabCluster;
  } catch (e) {
    throw new Error(
      `lab cluster ${name} not found (${file}): run the tests with "npm test", which starts the lab, or start it with "deploy/lab/lab.sh up site-a site-b" (${(e as Error).message})`,
    );
  }
}

export function connectLab(name: string): Promise<Cluster> {
  const c = labCluster(name);
  return connect({ conf: c.conf, clientId: c.clientId, keyring: c.keyring });
}

/** A fresh name for a test image, unique across tests and runs. */
export function uniqueName(prefix: string): string {
  return `${prefix}-${randomBytes(4).toString("hex")}`;
}

/** Runs the rbd CLI against a lab cluster (bounded: 120 s). */
export async function rbd(cluster: string, args: string[]): Promise<string> {
  const c = labCluster(cluster);
  const { stdout } = await execFileP("rbd", ["-c", c.conf, ...args], { timeout: 120_000, maxBuffer: 256 << 20 });
  return stdout;
}

export async function rbdJson<T>(cluster: string, args: string[]): Promise<T> {
  return JSON.parse(await rbd(cluster, [...args, "--format", "json"])) as T;
}

/** sha256 of `rbd export <spec> -` (spec: pool/image[@snap]) and the byte count. */
export function rbdExportSha256(cluster: string, spec: string): Promise<{ sha256: string; bytes: number }> {
  const c = labCluster(cluster);
  return new Promise((resolve, reject) => {
    const p = spawn("rbd", ["-c", c.conf, "export", "--no-progress", spec, "-"], { stdio: ["ignore", "pipe", "pipe"] });
    const h = createHash("sha256");
    let bytes = 0;
    let err = "";
    const timer = setTimeout(() => p.kill("SIGKILL"), 120_000);
    p.stdout.on("data", (d: Buffer) => {
      h.update(d);
      bytes += d.length;
    });
    p.stderr.on("data", (d: Buffer) => {
      err += d.toString();
    });
    p.on("error", reject);
    p.on("close", (code) => {
      clearTimeout(timer);
      if (code === 0) resolve({ sha256: h.digest("hex"), bytes });
      else reject(new Error(`rbd export ${spec} exited ${code}: ${err.trim()}`));
    });
  });
}

export function sha256(b: Buffer): string {
  return createHash("sha256").update(b).digest("hex");
}
