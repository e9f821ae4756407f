/**
 * The Ceph CLI doing what the benchmarks compare against: the copy of a diff between clusters as the
 * Cinder driver runs it (`rbd export-diff … - | rbd import-diff - …`), and a cluster's raw write
 * bandwidth (`rbd bench`).
 */
import { execFile, spawn } from "node:child_process";
import { promisify } from "node:util";
import type { IoCtx } from "../../agents/ceph";
import { labCluster, uniqueName } from "../helpers/lab";

/** `rbd bench --io-type write --io-size 4M --io-threads 16` over `mib` MiB of a new image in io's pool; MiB/s. */
export async function rawWriteMiBps(cluster: string, io: IoCtx, mib: number): Promise<number> {
  const name = uniqueName("bench-raw");
  await io.imageCreate(name, mib << 20);
  try {
    const { stdout } = await promisify(execFile)("rbd", [
      "-c",
      labCluster(cluster).conf,
      "bench",
      "--io-type",
      "write",
      "--io-size",
      "4M",
      "--io-threads",
      "16",
      "--io-total",
      String(mib << 20),
      `${io.pool}/${name}`,
    ]);
    // "ops/sec: 333.3" of 4 MiB writes (its bytes/sec is humanized, e.g. "1.3 GiB/s").
    return Number(/ops\/sec:\s*([\d.]+)/.exec(stdout)?.[1] ?? 0) * 4;
  } finally {
    await io.imageRemove(name);
  }
}

export function cliPipe(srcCluster: string, src: string, fromSnap: string | null, dstCluster: string, dst: string) {
  return new Promise<void>((resolve, reject) => {
    const exp = spawn(
      "rbd",
      [
        "-c",
        labCluster(srcCluster).conf,
        "export-diff",
        "--no-progress",
        ...(fromSnap ? ["--from-snap", fromSnap] : []),
        src,
        "-",
      ],
      { stdio: ["ignore", "pipe", "inherit"] },
    );
    const imp = spawn("rbd", ["-c", labCluster(dstCluster).conf, "import-diff", "--no-progress", "-", dst], {
      stdio: ["pipe", "ignore", "inherit"],
    });
    exp.stdout.pipe(imp.stdin);
    let done = 0;
    const end = (w: string) => (code: number | null) => {
      if (code !== 0) reject(new Error(`${w} exited ${code}`));
      else if (++done === 2) resolve();
    };
    exp.on("exit", end("rbd export-diff"));
    imp.on("exit", end("rbd import-diff"));
  });
}
