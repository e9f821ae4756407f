/*
 * Baseline for test/bench/addon-throughput: the same workload as the addon's benchmark, written
 * directly against librbd's C API (the API the addon binds). Sequential aio of IO_SIZE bytes with
 * THREADS in flight over an existing image, into/from caller-owned memory.
 *
 *   c-api-bench CONF POOL IMAGE read|write TOTAL_BYTES IO_SIZE THREADS   -> prints MiB/s
 */
#include <rados/librados.h>
#include <rbd/librbd.h>
#include <semaphore.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static sem_t slots;
static int failed;

static void done(rbd_completion_t c, void *arg) {
  (void)arg;
  if (rbd_aio_get_return_value(c) < 0) failed = 1;
  rbd_aio_release(c);
  sem_post(&slots);
}

int main(int argc, char **argv) {
  if (argc != 8) {
    fprintf(stderr, "usage: %s CONF POOL IMAGE read|write TOTAL IO_SIZE THREADS\n", argv[0]);
    return 2;
  }
  const char *conf = argv[1], *pool = argv[2], *image = argv[3];
  int write = strcmp(argv[4], "write") == 0;
  uint64_t total = strtoull(argv[5], NULL, 10);
  size_t io = strtoull(argv[6], NULL, 10);
  int threads = atoi(argv[7]);
  rados_t cl;
  rados_ioctx_t ioctx;
  rbd_image_t img;
  if (rados_create2(&cl, "ceph", "client.admin", 0) < 0 || rados_conf_read_file(cl, conf) < 0) return 1;
  rados_conf_set(cl, "rbd_cache", "false");
  rados_conf_set(cl, "rbd_disable_zero_copy_writes", "false");
  rados_conf_set(cl, "client_mount_timeout", "30");
  if (rados_connect(cl) < 0 || rados_ioctx_create(cl, pool, &ioctx) < 0) return 1;
  if (rbd_open(ioctx, image, &img, NULL) < 0) return 1;
  char **bufs = calloc((size_t)threads, sizeof(char *));
  for (int i = 0; i < threads; i++) {
    bufs[i] = malloc(io);
    for (size_t j = 0; j < io; j++) bufs[i][j] = (char)rand();
  }
  sem_init(&slots, 0, (unsigned)threads);
  struct timespec a, b;
  clock_gettime(CLOCK_MONOTONIC, &a);
  uint64_t k = 0;
  for (uint64_t off = 0; off < total; off += io, k++) {
    sem_wait(&slots);
    rbd_completion_t c;
    rbd_aio_create_completion(NULL, done, &c);
    char *buf = bufs[k % (uint64_t)threads];
    int rc = write ? rbd_aio_write(img, off, io, buf, c) : rbd_aio_read(img, off, io, buf, c);
    if (rc < 0) return 1;
  }
  for (int i = 0; i < threads; i++) sem_wait(&slots);
  if (write) rbd_flush(img);
  clock_gettime(CLOCK_MONOTONIC, &b);
  double secs = (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9;
  printf("%.1f\n", (double)total / 1048576.0 / secs);
  rbd_close(img);
  rados_ioctx_destroy(ioctx);
  rados_shutdown(cl);
  return failed;
}
