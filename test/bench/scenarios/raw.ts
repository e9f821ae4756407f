/**
 * raw: `rbd bench --io-type write --io-size 4M --io-threads 16` over `--mib` of a new image in site-b's
 * backups pool — the destination's physical write limit the backup rows compare against. One row (the
 * median of the rounds), no CLI column; its bound is the OSDs by construction.
 */
import { connectLab } from "../../helpers/lab";
import { rawWriteMiBps } from "../ceph-cli";
import { median } from "../measure";
import type { Scenario } from "./types";

export const raw: Scenario = {
  name: "raw",
  describe: "rbd bench write (4 MiB, 16 threads) on the destination cluster: the physical limit",
  writes: (ctx) => [{ site: "site-b", mib: ctx.mib * ctx.rounds }],
  async run(ctx) {
    const cluster = await connectLab("site-b");
    const io = await cluster.openIoCtx("backups");
    const rates: number[] = [];
    try {
      for (let round = 0; round < ctx.rounds; round++) rates.push(await rawWriteMiBps("site-b", io, ctx.mib));
    } finally {
      await io.close();
      await cluster.close();
    }
    const mibps = median(rates);
    return [
      {
        scenario: `raw write, rbd bench 4 MiB × 16, site-b`,
        cliSeconds: null,
        oursSeconds: +(ctx.mib / mibps).toFixed(3),
        ratio: null,
        oursMiBps: +mibps.toFixed(1),
        bound: "OSD",
        note: `rbd bench itself in the rbdbackup columns; ${ctx.mib} MiB written; rounds ${rates.map((x) => x.toFixed(0)).join(", ")} MiB/s`,
      },
    ];
  },
};
