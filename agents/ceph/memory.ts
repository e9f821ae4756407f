/** Memory the C libraries hold: glibc's free arenas given back to the kernel (malloc_trim). */
import { native } from "./native";

/** glibc malloc_trim(0) off the JS thread; true when memory went back to the kernel. */
export function releaseFreeMemory(): Promise<boolean> {
  return native().mallocTrim();
}
