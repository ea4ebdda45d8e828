/* floorcopy: the raw-copy floor of the lab benchmark (hack/build-bench-lab.sh).
 *
 *   floorcopy IP PORT PATH DEVICE
 *
 * GETs http://IP:PORT/PATH (HTTP/1.0) and writes the body to DEVICE from byte 0, as fast as
 * a plain copy can on this machine: one thread reads the socket into 4 MiB page-aligned
 * buffers, another writes them with O_DIRECT, four buffers in flight, then fsync. No
 * checksum, no format, no progress: what is left is the network and the disk, which is what
 * "the unavoidable floor" of an image write is. Prints "BYTES SECONDS" on success.
 * Static, no libc beyond musl: built by hack/build-bench-lab.sh with musl-gcc.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BUF (4u << 20)
#define NBUF 4

static unsigned char *bufs[NBUF];
static size_t lens[NBUF];
static int full[NBUF];  /* 1: filled, waiting for the writer; -1: end of stream */
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int out_fd;
static const char *dev;

static void die(const char *what) {
    perror(what);
    exit(1);
}

static void *writer(void *arg) {
    (void)arg;
    off_t off = 0;
    for (int i = 0;; i = (i + 1) % NBUF) {
        pthread_mutex_lock(&mu);
        while (!full[i]) pthread_cond_wait(&cv, &mu);
        int end = full[i] < 0;
        size_t n = lens[i];
        pthread_mutex_unlock(&mu);
        size_t whole = n & ~(size_t)4095;
        if (whole && pwrite(out_fd, bufs[i], whole, off) != (ssize_t)whole) die("pwrite");
        if (n > whole) {
            /* The unaligned tail: through the page cache. */
            int fd = open(dev, O_WRONLY);
            if (fd < 0 || pwrite(fd, bufs[i] + whole, n - whole, off + whole) != (ssize_t)(n - whole))
                die("tail");
            if (fsync(fd)) die("fsync tail");
            close(fd);
        }
        off += n;
        pthread_mutex_lock(&mu);
        full[i] = 0;
        pthread_cond_broadcast(&cv);
        pthread_mutex_unlock(&mu);
        if (end) return NULL;
    }
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: floorcopy IP PORT PATH DEVICE\n");
        return 2;
    }
    dev = argv[4];
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
    if (s < 0 || inet_pton(AF_INET, argv[1], &a.sin_addr) != 1) die("address");
    int rcv = 8 << 20;
    setsockopt(s, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof rcv);
    if (connect(s, (struct sockaddr *)&a, sizeof a)) die("connect");
    char req[512];
    int rl = snprintf(req, sizeof req, "GET /%s HTTP/1.0\r\nHost: %s\r\n\r\n", argv[3], argv[1]);
    if (write(s, req, rl) != rl) die("request");
    out_fd = open(dev, O_WRONLY | O_DIRECT);
    if (out_fd < 0) die(dev);
    for (int i = 0; i < NBUF; i++)
        if (posix_memalign((void **)&bufs[i], 4096, BUF)) die("memalign");

    /* Headers: read into buffer 0 until the blank line; what follows is body. */
    size_t got = 0;
    char *body = NULL;
    while (!body) {
        ssize_t r = read(s, bufs[0] + got, BUF - got);
        if (r <= 0) die("headers");
        got += r;
        body = memmem(bufs[0], got, "\r\n\r\n", 4);
    }
    if (strncmp((char *)bufs[0], "HTTP/1.", 7) || strncmp((char *)bufs[0] + 9, "200", 3)) {
        fprintf(stderr, "floorcopy: not a 200 answer\n");
        return 1;
    }
    body += 4;
    size_t carry = got - (body - (char *)bufs[0]);
    memmove(bufs[0], body, carry);

    pthread_t w;
    if (pthread_create(&w, NULL, writer, NULL)) die("thread");
    unsigned long long total = 0;
    for (int i = 0;; i = (i + 1) % NBUF) {
        pthread_mutex_lock(&mu);
        while (full[i]) pthread_cond_wait(&cv, &mu);
        pthread_mutex_unlock(&mu);
        size_t n = i == 0 && total == 0 ? carry : 0;
        int end = 0;
        while (n < BUF) {
            ssize_t r = read(s, bufs[i] + n, BUF - n);
            if (r < 0) die("read");
            if (r == 0) {
                end = 1;
                break;
            }
            n += r;
        }
        total += n;
        pthread_mutex_lock(&mu);
        lens[i] = n;
        full[i] = end ? -1 : 1;
        pthread_cond_broadcast(&cv);
        pthread_mutex_unlock(&mu);
        if (end) break;
    }
    pthread_join(w, NULL);
    if (fsync(out_fd)) die("fsync");
    clock_gettime(CLOCK_MONOTONIC, &t1);
    printf("%llu %.2f\n", total, (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9);
    return 0;
}
