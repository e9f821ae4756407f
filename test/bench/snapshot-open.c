/*
 * What a backup's snapshot steps cost on the source (issue 16), against librbd's C API: after
 * `rbd_snap_create`, reading the snapshot needs a handle at it. Three ways, each round timing its steps:
 *   open  — a second rbd_open at the new snapshot (what the engine did), closed after the "transfer";
 *   set   — the head handle itself moved to the snapshot (rbd_snap_set) and back to HEAD before the prune;
 *   early — a second handle opened at HEAD beside the first, moved to the snapshot once it exists;
 *   ro    — a second handle opened read-only at the snapshot (no watch of its own);
 *   list  — no reading: the snapshots listed on the handle that made it (what the destination's sink
 *           would pay to learn the new snapshot's id there: the handle refreshes first).
 * Each round then prunes the previous round's snapshot through the head handle, as the engine does.
 * With `vm` another client (a "VM") holds the image's exclusive lock throughout, as on an attached volume.
 * Run it against a lab with OSD latency injected (ms_inject_delay_*) to see round trips. Removes what it
 * creates.
 *
 *   gcc -O2 test/bench/snapshot-open.c -o /tmp/snapshot-open -lrbd -lrados
 *   /tmp/snapshot-open $RBDBACKUP_LAB_DIR/site-a/ceph.conf rbd [rounds=8] [vm]
 */
#include <rados/librados.h>
#include <rbd/librbd.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static int check(int rc, const char *what) {
  if (rc < 0) {
    fprintf(stderr, "%s: %s\n", what, strerror(-rc));
    exit(1);
  }
  return rc;
}

#define STEP(name, call)    \
  do {                      \
    double t0 = ms();       \
    check((call), name);    \
    printf(" %s %.1f", name, ms() - t0); \
  } while (0)

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s CONF POOL [rounds] [vm]\n", argv[0]);
    return 2;
  }
  int rounds = argc > 3 ? atoi(argv[3]) : 8;
  int vm = argc > 4 && strcmp(argv[4], "vm") == 0;
  char name[64];
  snprintf(name, sizeof name, "snapshot-open-%d", (int)getpid());
  rados_t r, r2;
  rados_ioctx_t io, io2;
  int order = 0;
  check(rados_create(&r, "admin"), "rados_create");
  check(rados_conf_read_file(r, argv[1]), "conf");
  check(rados_connect(r), "connect");
  check(rados_ioctx_create(r, argv[2], &io), "ioctx");
  check(rbd_create(io, name, 64 << 20, &order), "create");
  rbd_image_t held = NULL;
  if (vm) {
    check(rados_create(&r2, "admin"), "rados_create");
    check(rados_conf_read_file(r2, argv[1]), "conf");
    check(rados_connect(r2), "connect");
    check(rados_ioctx_create(r2, argv[2], &io2), "ioctx");
    check(rbd_open(io2, name, &held, NULL), "vm open");
    char b[4096] = {1};
    check((int)rbd_write(held, 0, sizeof b, b), "vm write");
  }
  const char *modes[] = {"open", "set", "early", "ro", "list"};
  char prev[5][32] = {"", "", "", "", ""};
  for (int round = 0; round < rounds; round++) {
    for (int m = 0; m < 5; m++) {
      char snap[32];
      snprintf(snap, sizeof snap, "%s-%d", modes[m], round);
      rbd_image_t head, second = NULL;
      printf("%-5s round %d:", modes[m], round + 1);
      double t0 = ms();
      STEP("openHead", rbd_open(io, name, &head, NULL));
      if (m == 2) STEP("openSecond", rbd_open(io, name, &second, NULL));
      STEP("snapCreate", rbd_snap_create(head, snap));
      if (m == 0) STEP("openAtSnap", rbd_open(io, name, &second, snap));
      if (m == 3) STEP("openAtSnapRO", rbd_open_read_only(io, name, &second, snap));
      if (m == 1) STEP("setSnap", rbd_snap_set(head, snap));
      if (m == 2) STEP("setSnap", rbd_snap_set(second, snap));
      if (m == 4) {
        rbd_snap_info_t infos[16];
        int max = 16;
        STEP("snapListOnHead", rbd_snap_list(head, infos, &max));
        rbd_snap_list_end(infos);
      }
      double ready = ms() - t0;
      char b[4096];
      check((int)rbd_read(m == 1 || m == 4 ? head : second, 0, sizeof b, b), "read");
      if (m == 1) STEP("setHead", rbd_snap_set(head, NULL));
      if (prev[m][0]) STEP("prune", rbd_snap_remove(head, prev[m]));
      if (second) STEP("closeSecond", rbd_close(second));
      STEP("closeHead", rbd_close(head));
      printf(" | snapshot readable after %.1f ms, all %.1f ms\n", ready, ms() - t0);
      strcpy(prev[m], snap);
    }
  }
  rbd_image_t im;
  check(rbd_open(io, name, &im, NULL), "open");
  for (int m = 0; m < 5; m++) rbd_snap_remove(im, prev[m]);
  rbd_close(im);
  if (held) {
    rbd_close(held);
    rados_ioctx_destroy(io2);
    rados_shutdown(r2);
  }
  check(rbd_remove(io, name), "remove");
  rados_ioctx_destroy(io);
  rados_shutdown(r);
  return 0;
}
