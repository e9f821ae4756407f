/** small: a 64 MiB image fully written, full backup site-a → site-b vs the CLI pipe (fixed costs show here). */
import { fullBackupRow, fullBackupWrites } from "./full";
import type { Scenario } from "./types";

export const SMALL_MIB = 64;

export const small: Scenario = {
  name: "small",
  describe: `full backup of a ${SMALL_MIB} MiB image fully written, vs the CLI pipe`,
  run: async (ctx) => [await fullBackupRow(ctx, `full ${SMALL_MIB} MiB image, all written`, SMALL_MIB)],
  writes: (ctx) => fullBackupWrites(ctx, SMALL_MIB),
};
