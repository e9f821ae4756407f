/**
 * Structured logs: one JSON object per line on stderr. Level from RBDBACKUP_LOG_LEVEL (debug|info|warn|error).
 * An Error in the fields keeps its stack, its own fields and its `cause` chain.
 */
const levels = { debug: 10, info: 20, warn: 30, error: 40 } as const;
type Level = keyof typeof levels;
const threshold = levels[(process.env.RBDBACKUP_LOG_LEVEL as Level) ?? "info"] ?? levels.info;

export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
  child(fields: Record<string, unknown>): Logger;
}

/**
 * An Error as JSON: name, message, its own fields (code, errno, op, status…), stack and the chain of
 * causes (depth-bounded, so a cycle cannot loop).
 */
export function serializeError(e: unknown, depth = 0): unknown {
  if (!(e instanceof Error)) return e;
  const out: Record<string, unknown> = { name: e.name, message: e.message };
  for (const [k, v] of Object.entries(e)) {
    if (k !== "cause" && (typeof v === "string" || typeof v === "number" || typeof v === "boolean")) out[k] = v;
  }
  if (e.stack) out.stack = e.stack;
  if (e.cause !== undefined) out.cause = depth < 5 ? serializeError(e.cause, depth + 1) : String(e.cause);
  return out;
}

function errFields(fields: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(fields)) out[k] = v instanceof Error ? serializeError(v) : v;
  return out;
}

export function logger(base: Record<string, unknown> = {}): Logger {
  const emit = (level: Level, msg: string, fields?: Record<string, unknown>) => {
    if (levels[level] < threshold) return;
    const line = { time: new Date().toISOString(), level, msg, ...base, ...(fields ? errFields(fields) : {}) };
    process.stderr.write(`${JSON.stringify(line)}\n`);
  };
  return {
    debug: (m, f) => emit("debug", m, f),
    info: (m, f) => emit("info", m, f),
    warn: (m, f) => emit("warn", m, f),
    error: (m, f) => emit("error", m, f),
    child: (f) => logger({ ...base, ...f }),
  };
}
