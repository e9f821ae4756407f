/** Placeholder: the real sparse scenario is built by r4-fixed in its own branch; the lead takes that file when merging. */
import type { Scenario } from "./types";

export const sparse: Scenario = {
  name: "sparse",
  describe: "full backup of a sparse 4 GiB image with 64 MiB written",
  run: async () => {
    throw new Error("scenario sparse: not built in this branch");
  },
};
