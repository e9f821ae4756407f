/*
 * What a snapshot's quiesce costs (issue 16), against librbd's C API: rounds alternate
 * `rbd_snap_create` (the image's watchers are asked to quiesce and then to unquiesce: two watch-notify
 * round trips) and `rbd_snap_create2` with RBD_SNAP_CREATE_SKIP_QUIESCE (what the destination's commit
 * uses on a base image no other client maps). Each round writes 1 MiB first, so the handle holds the
 * exclusive lock as the sink's does. Run it against a lab with OSD latency injected
 * (ms_inject_delay_*) to see the round trips. Removes what it creates.
 *
 *   gcc -O2 test/bench/snapshot-quiesce.c -o /tmp/snapshot-quiesce -lrbd -lrados
 *   /tmp/snapshot-quiesce $RBDBACKUP_LAB_DIR/site-b/ceph.conf backups [rounds=10]
 */
#include <rados/librados.h>
#include <rbd/librbd.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

int main(int argc, char** argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s <ceph.conf> <pool> [rounds]\n", argv[0]);
    return 2;
  }
  int rounds = argc > 3 ? atoi(argv[3]) : 10;
  rados_t c;
  rados_ioctx_t io;
  if (rados_create(&c, "admin") || rados_conf_read_file(c, argv[1]) || rados_conf_set(c, "rbd_cache", "false") ||
      rados_connect(c) || rados_ioctx_create(c, argv[2], &io)) {
    fprintf(stderr, "cannot connect to %s pool %s\n", argv[1], argv[2]);
    return 1;
  }
  const char* name = "bench-snapshot-quiesce";
  int order = 22;
  uint64_t features = 1 | 4 | 8 | 16 | 32; /* layering, exclusive-lock, object-map, fast-diff, deep-flatten */
  rbd_remove(io, name);
  int r = rbd_create2(io, name, 256ull << 20, features, &order);
  rbd_image_t im;
  if (r < 0 || (r = rbd_open(io, name, &im, NULL)) < 0) {
    fprintf(stderr, "create/open: %s\n", strerror(-r));
    return 1;
  }
  char* buf = malloc(1 << 20);
  memset(buf, 7, 1 << 20);
  double sum[2] = {0, 0};
  int n[2] = {0, 0};
  for (int i = 0; i < rounds; i++) {
    char snap[32];
    snprintf(snap, sizeof snap, "s%d", i);
    rbd_write(im, (uint64_t)(i % 256) << 20, 1 << 20, buf);
    int skip = i % 2;
    double t = now_ms();
    r = skip ? rbd_snap_create2(im, snap, RBD_SNAP_CREATE_SKIP_QUIESCE, NULL, NULL) : rbd_snap_create(im, snap);
    double ms = now_ms() - t;
    printf("%s %-12s r=%d %.1f ms\n", snap, skip ? "skip-quiesce" : "quiesce", r, ms);
    sum[skip] += ms;
    n[skip]++;
  }
  if (n[0] && n[1]) printf("mean: quiesce %.1f ms, skip-quiesce %.1f ms\n", sum[0] / n[0], sum[1] / n[1]);
  for (int i = 0; i < rounds; i++) {
    char snap[32];
    snprintf(snap, sizeof snap, "s%d", i);
    rbd_snap_remove(im, snap);
  }
  rbd_close(im);
  rbd_remove(io, name);
  free(buf);
  rados_ioctx_destroy(io);
  rados_shutdown(c);
  return 0;
}
