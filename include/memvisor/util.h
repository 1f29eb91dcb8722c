/* Small shared helpers: logging, fd passing over Unix sockets, time, sizes.
 * Used by the programs and by modules that talk over sockets. */
#ifndef MEMVISOR_UTIL_H
#define MEMVISOR_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include "memvisor/error.h"

#define MV_PAGE_SIZE 4096ULL
#define MV_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define MV_ALIGN_UP(x, a) (((x) + (a) - 1) & ~((uint64_t)(a) - 1))
#define MV_IS_ALIGNED(x, a) (((x) & ((uint64_t)(a) - 1)) == 0)

enum mv_log_level { MV_LOG_DEBUG, MV_LOG_INFO, MV_LOG_WARN, MV_LOG_ERROR };
/* Logs one line to stderr as "ts level prog: msg". The level threshold comes
 * from $MEMVISOR_LOG (debug|info|warn|error), read once per process. */
void mv_log(enum mv_log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void mv_log_set_prog(const char *prog);

uint64_t mv_now_ns(void);      /* CLOCK_MONOTONIC */
uint64_t mv_thread_cpu_ns(void);   /* CPU time of the calling thread */
uint64_t mv_wall_s(void);      /* CLOCK_REALTIME seconds */
struct timespec;
/* *ts = now on clk + ms: an absolute deadline for pthread_cond_timedwait. */
void mv_deadline_ms(struct timespec *ts, int clk, unsigned ms);

/* Sends len bytes plus up to 16 fds in one sendmsg (SCM_RIGHTS). Retries on
 * EINTR; returns 0 or -errno. */
int mv_send_fds(int sock, const void *buf, size_t len, const int *fds, unsigned nfds) MV_MUST_CHECK;
/* Receives exactly len bytes; fds received are stored in fds (up to *nfds,
 * updated to the count); extra fds are closed. Returns 0, -EPIPE on EOF,
 * -ETIMEDOUT after timeout_ms (<0: none), or -errno. */
int mv_recv_fds(int sock, void *buf, size_t len, int *fds, unsigned *nfds, int timeout_ms) MV_MUST_CHECK;

/* Unix stream sockets: a connected socket / a listening one (an old file
 * at path is replaced) as an fd, or -errno. */
int mv_unix_connect(const char *path) MV_MUST_CHECK;
int mv_unix_listen(const char *path, unsigned mode, int backlog) MV_MUST_CHECK;

/* Parses "64M", "4G", "4096", "1.5G" (binary units) into bytes. -EINVAL on junk or overflow. */
int mv_parse_size(const char *s, uint64_t *out) MV_MUST_CHECK;
/* Formats bytes as "4.0 GiB" into buf. */
const char *mv_fmt_size(uint64_t bytes, char *buf, size_t len);

/* Writes data to path atomically (tmp file, fsync, rename). */
int mv_write_file_atomic(const char *path, const void *data, size_t len) MV_MUST_CHECK;
/* Reads a whole regular file (no symlink) of at most max bytes into a
 * malloc'ed, NUL-terminated buffer. -ENOENT, -EBADMSG (not a regular file),
 * -EFBIG (over max), -EIO (changed while read), or -errno. */
int mv_read_file(const char *path, size_t max, void **buf, size_t *len) MV_MUST_CHECK;
/* The same from an open fd (left open), from its current offset. */
int mv_read_fd(int fd, size_t max, void **buf, size_t *len) MV_MUST_CHECK;
/* Room for one more element in a growable array of n used of *cap: returns
 * p, or p reallocated to twice *cap (first when empty). Aborts when out of
 * memory, for the daemon's and VMM's bookkeeping arrays that cannot go on
 * without the element. */
void *mv_grow(void *p, size_t n, size_t *cap, size_t elem, size_t first);
/* mkdir -p with mode. */
int mv_mkdir_p(const char *path, unsigned mode) MV_MUST_CHECK;

#endif
