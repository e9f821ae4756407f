/** Reading Prometheus text (a daemon's /metrics, see `scrape` in ./coordinator): one sample's value. */

/** Value of a sample `name{labels}`: every given label must match (others may be present); null when absent. */
export function sample(body: string, name: string, labels: Record<string, string> = {}): number | null {
  for (const line of body.split("\n")) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = Object.fromEntries([...(m[3] ?? "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((x) => [x[1], x[2]]));
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) return Number(m[4]);
  }
  return null;
}
