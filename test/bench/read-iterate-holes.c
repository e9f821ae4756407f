/*
 * Whether librbd's C API can tell a reader where an image's holes are (issue 16, the sparse row): reads
 * the whole image (at a snapshot) with `rbd_read_iterate2`, whose callback gets a NULL buffer for a hole,
 * and counts the callbacks with data and with holes. On Ceph 16 with the lab's memstore OSDs every
 * callback carries data (zeros included), so a reader of a sparse image reads its zeros. Read-only.
 *
 *   gcc -O2 test/bench/read-iterate-holes.c -o /root/scratch/read-iterate-holes -lrbd -lrados
 *   rbd -c $L/ceph.conf create --size 4G rbd/holes
 *   rbd -c $L/ceph.conf bench --io-type write --io-pattern rand --io-size 256K --io-total 64M rbd/holes
 *   rbd -c $L/ceph.conf snap create rbd/holes@s
 *   /root/scratch/read-iterate-holes $L/ceph.conf $L/keyring holes s
 *   (L=$RBDBACKUP_LAB_DIR/site-a; remove the image and its snapshot afterwards)
 */
#include <rados/librados.h>
#include <rbd/librbd.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

static long holes, data;
static unsigned long long hole_bytes, data_bytes;

static int each(uint64_t off, size_t len, const char *buf, void *arg) {
  (void)off;
  (void)arg;
  if (buf == NULL) {
    holes++;
    hole_bytes += len;
  } else {
    data++;
    data_bytes += len;
  }
  return 0;
}

static double now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: %s CONF KEYRING IMAGE [SNAPSHOT]  (pool rbd)\n", argv[0]);
    return 2;
  }
  rados_t c;
  rados_ioctx_t io;
  rbd_image_t img;
  uint64_t size;
  if (rados_create(&c, NULL) || rados_conf_read_file(c, argv[1]) || rados_conf_set(c, "keyring", argv[2]) ||
      rados_connect(c)) {
    fprintf(stderr, "cannot connect\n");
    return 1;
  }
  if (rados_ioctx_create(c, "rbd", &io) || rbd_open_read_only(io, argv[3], &img, argc > 4 ? argv[4] : NULL)) {
    fprintf(stderr, "cannot open rbd/%s\n", argv[3]);
    return 1;
  }
  rbd_get_size(img, &size);
  double t = now_ms();
  int64_t r = rbd_read_iterate2(img, 0, size, each, NULL);
  printf("rbd_read_iterate2 rc %lld in %.1f ms: %ld callbacks with data (%llu MiB), %ld holes (%llu MiB)\n",
         (long long)r, now_ms() - t, data, data_bytes >> 20, holes, hole_bytes >> 20);
  rbd_close(img);
  rados_ioctx_destroy(io);
  rados_shutdown(c);
  return r < 0;
}
