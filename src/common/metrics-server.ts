/**
 * The /metrics HTTP endpoint of a process (plain HTTP; keep it on a trusted network): serves one
 * prom-client registry at /metrics, 404 elsewhere.
 */
import { createServer, type Server } from "node:http";
import { collectDefaultMetrics, type Registry } from "prom-client";
import { splitHostPort } from "./address";
import type { Logger } from "./log";

export class MetricsServer {
  #server: Server | null = null;

  constructor(readonly registry: Registry) {}

  /** Listens on host:port (port 0 picks one); resolves with the address. */
  async listen(address: string, log: Logger): Promise<string> {
    const [host, port] = splitHostPort(address);
    const server = createServer((req, res) => {
      if (req.url !== "/metrics") {
        res.writeHead(404, { "content-type": "text/plain" }).end("only /metrics here\n");
        return;
      }
      this.registry.metrics().then(
        (text) => res.writeHead(200, { "content-type": this.registry.contentType }).end(text),
        (e) => {
          log.error("metrics collection failed", { error: (e as Error).message });
          res.writeHead(500).end();
        },
      );
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(Number(port), host.replace(/^\[|\]$/g, ""), () => resolve());
    });
    this.#server = server;
    const a = server.address();
    return typeof a === "object" && a ? `${host}:${a.port}` : address;
  }

  async close(): Promise<void> {
    const s = this.#server;
    this.#server = null;
    if (s) await new Promise<void>((r) => s.close(() => r()));
  }
}

/**
 * How often the event-loop delay histogram (nodejs_eventloop_lag_*) samples, ms. prom-client's default
 * (10 ms) is a timer firing 100 times a second — about 0.75% of a core in an otherwise idle process,
 * more than a coordinator's whole idle work. A stall delays the next sample by its length, so at 100 ms
 * every stall longer than that is still recorded (shorter ones are sampled).
 */
export const EVENT_LOOP_SAMPLE_MS = 100;

/**
 * prom-client's process and Node.js metrics, minus three gauges whose names end in _total (which
 * Prometheus reserves for counters; `promtool check metrics` rejects them).
 */
export function registerDefaultMetrics(registry: Registry): void {
  collectDefaultMetrics({ register: registry, eventLoopMonitoringPrecision: EVENT_LOOP_SAMPLE_MS });
  for (const name of ["nodejs_active_handles_total", "nodejs_active_requests_total", "nodejs_active_resources_total"])
    registry.removeSingleMetric(name);
}
