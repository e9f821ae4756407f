/** The Ceph CLI's copy of a diff between clusters, as the Cinder driver runs it: `rbd export-diff … - | rbd import-diff - …`. */
import { spawn } from "node:child_process";
import { labCluster } from "../helpers/lab";

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
