/*
 * The floor under a small incremental's destination (issue 16): what the OSDs take for the writes
 * alone, written directly against librbd's C API with the agents' settings (rbd_cache=false, zero-copy
 * writes) and their window (8 aio writes in flight). An image is filled, then each round snapshots it
 * and writes COUNT random 64 KiB extents — as the destination's base image gets them: after the
 * previous backup's snapshot, so the OSD copies each object on its first write. Prints each round's
 * milliseconds and the thread CPU and wall time spent inside rbd_aio_write2 per write. Removes what it
 * creates. Compare a round with the bench's "destination: receive" (incremental-latency.js).
 *
 *   gcc -O2 test/bench/write-floor.c -o /tmp/write-floor -lrbd -lrados -lpthread
 *   /tmp/write-floor $RBDBACKUP_LAB_DIR/site-b/ceph.conf backups [size_mib=1024] [count=320] [rounds=5]
 */
#include <rados/librados.h>
#include <rbd/librbd.h>
#include <semaphore.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define EXTENT 65536
#define IN_FLIGHT 8
#define FILL 4194304

static sem_t slots;
static int failed;

static double us(clockid_t c) {
  struct timespec t;
  clock_gettime(c, &t);
  return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static void done(rbd_completion_t c, void *arg) {
  (void)arg;
  if (rbd_aio_get_return_value(c) < 0) failed = 1;
  rbd_aio_release(c);
  sem_post(&slots);
}

/* One aio write of len bytes at off, waiting for a slot first. */
static int submit(rbd_image_t im, uint64_t off, size_t len, const char *buf, double *cpu, double *wall) {
  sem_wait(&slots);
  rbd_completion_t c;
  if (rbd_aio_create_completion(NULL, done, &c) < 0) return -1;
  double c0 = us(CLOCK_THREAD_CPUTIME_ID), w0 = us(CLOCK_MONOTONIC);
  int rc = rbd_aio_write2(im, off, len, buf, c, 0);
  *cpu += us(CLOCK_THREAD_CPUTIME_ID) - c0;
  *wall += us(CLOCK_MONOTONIC) - w0;
  return rc;
}

static void drain(void) {
  for (int k = 0; k < IN_FLIGHT; k++) sem_wait(&slots);
  for (int k = 0; k < IN_FLIGHT; k++) sem_post(&slots);
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s CONF POOL [size_mib] [count] [rounds]\n", argv[0]);
    return 2;
  }
  uint64_t size = (uint64_t)(argc > 3 ? atoi(argv[3]) : 1024) << 20;
  int count = argc > 4 ? atoi(argv[4]) : 320;
  int rounds = argc > 5 ? atoi(argv[5]) : 5;
  char name[64];
  snprintf(name, sizeof name, "write-floor-%d", (int)getpid());
  rados_t r;
  rados_ioctx_t io;
  rbd_image_t im;
  int order = 0;
  if (rados_create(&r, "admin") < 0 || rados_conf_read_file(r, argv[1]) < 0) return 1;
  rados_conf_set(r, "rbd_cache", "false");
  rados_conf_set(r, "rbd_disable_zero_copy_writes", "false");
  if (rados_connect(r) < 0 || rados_ioctx_create(r, argv[2], &io) < 0) {
    fprintf(stderr, "cannot connect to %s pool %s\n", argv[1], argv[2]);
    return 1;
  }
  if (rbd_create(io, name, size, &order) < 0 || rbd_open(io, name, &im, NULL) < 0) {
    fprintf(stderr, "cannot create %s\n", name);
    return 1;
  }
  char *buf = malloc(FILL);
  memset(buf, 0x5a, FILL);
  sem_init(&slots, 0, IN_FLIGHT);
  double cpu = 0, wall = 0;
  for (uint64_t off = 0; off < size; off += FILL) submit(im, off, FILL, buf, &cpu, &wall);
  drain();
  srand(1);
  for (int round = 0; round < rounds && !failed; round++) {
    char snap[32];
    snprintf(snap, sizeof snap, "s%d", round);
    rbd_snap_create(im, snap);
    cpu = wall = 0;
    double t0 = us(CLOCK_MONOTONIC);
    for (int i = 0; i < count; i++) {
      uint64_t off = (uint64_t)(rand() % (int)(size / EXTENT)) * EXTENT;
      submit(im, off, EXTENT, buf + (i % IN_FLIGHT) * EXTENT, &cpu, &wall);
    }
    drain();
    printf("round %d: %d writes of 64 KiB after a snapshot in %.1f ms; inside rbd_aio_write2 per write: "
           "thread CPU %.1f us, wall %.1f us\n",
           round + 1, count, (us(CLOCK_MONOTONIC) - t0) / 1e3, cpu / count, wall / count);
  }
  for (int round = 0; round < rounds; round++) {
    char snap[32];
    snprintf(snap, sizeof snap, "s%d", round);
    rbd_snap_remove(im, snap);
  }
  rbd_close(im);
  rbd_remove(io, name);
  rados_ioctx_destroy(io);
  rados_shutdown(r);
  free(buf);
  if (failed) fprintf(stderr, "a write failed\n");
  return failed;
}
