/** Argument checks of the Ceph facade: wrong types -> TypeError, out of range -> RangeError, naming the argument. */

const MAX_SAFE = Number.MAX_SAFE_INTEGER; // 2^53 - 1

export function name(value: unknown, arg: string, maxBytes = 4096): string {
  if (typeof value !== "string") throw new TypeError(`${arg} must be a string, got ${typeof value}`);
  if (value.length === 0) throw new RangeError(`${arg} must not be empty`);
  if (value.includes("\0")) throw new RangeError(`${arg} must not contain NUL characters`);
  if (Buffer.byteLength(value) > maxBytes) throw new RangeError(`${arg} is longer than ${maxBytes} bytes`);
  return value;
}

export function optionalName(value: unknown, arg: string, maxBytes = 4096): string | undefined {
  return value === undefined ? undefined : name(value, arg, maxBytes);
}

/** A string that may be empty (RADOS namespace, image-meta value). */
export function text(value: unknown, arg: string): string {
  if (typeof value !== "string") throw new TypeError(`${arg} must be a string, got ${typeof value}`);
  if (value.includes("\0")) throw new RangeError(`${arg} must not contain NUL characters`);
  return value;
}

/** A non-negative integer below 2^53 (offsets, lengths, sizes). */
export function uint(value: unknown, arg: string, max = MAX_SAFE): number {
  if (typeof value !== "number") throw new TypeError(`${arg} must be a number, got ${typeof value}`);
  if (!Number.isInteger(value)) throw new RangeError(`${arg} must be an integer, got ${value}`);
  if (value < 0) throw new RangeError(`${arg} must not be negative, got ${value}`);
  if (value > max) throw new RangeError(`${arg} must be at most ${max}, got ${value}`);
  return value;
}

export function positiveInt(value: unknown, arg: string, max = MAX_SAFE): number {
  const v = uint(value, arg, max);
  if (v === 0) throw new RangeError(`${arg} must be greater than 0`);
  return v;
}

export function bool(value: unknown, arg: string): boolean {
  if (typeof value !== "boolean") throw new TypeError(`${arg} must be a boolean, got ${typeof value}`);
  return value;
}

export function buffer(value: unknown, arg: string): Buffer {
  if (!Buffer.isBuffer(value)) throw new TypeError(`${arg} must be a Buffer`);
  return value;
}

/** offset + length must stay below 2^53 too. */
export function range(offset: unknown, length: unknown, offsetArg = "offset", lengthArg = "length"): [number, number] {
  const o = uint(offset, offsetArg);
  const l = uint(length, lengthArg);
  if (o + l > MAX_SAFE) throw new RangeError(`${offsetArg} + ${lengthArg} must be at most 2^53 - 1`);
  return [o, l];
}

export function object(value: unknown, arg: string): Record<string, unknown> {
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw new TypeError(`${arg} must be an object`);
  }
  return value as Record<string, unknown>;
}
