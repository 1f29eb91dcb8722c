/* Migration frames over a stream socket: whole-frame sends with a timeout
 * and an optional bandwidth cap, and exact reads (never past the frame, so
 * the destination daemon can pass the socket on after CONFIG). Used by
 * send.c, recv.c, postcopy.c and config.c; the codec is stream.c. */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>
#include "memvisor/ctl.h"
#include "memvisor/util.h"
#include "migrate_i.h"

#define RX_CHUNK (128u << 10)   /* checksum received payload in cache-sized pieces */

void mig_conn_init(struct mig_conn *c, int fd, int timeout_ms, uint32_t first_rx_seq)
{
	memset(c, 0, sizeof(*c));
	c->fd = fd;
	c->timeout_ms = timeout_ms;
	c->rx_seq = first_rx_seq;
	pthread_mutex_init(&c->wlock, NULL);
	/* Room for a couple of full RAM frames in flight: fewer wake-ups per
	 * frame on both ends (best effort; capped by net.core.*mem_max). */
	int sz = 4 << 20;
	(void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
	(void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz));
	c->rx_buf = malloc(MV_MIGRATE_MAX_PAYLOAD);
	if (!c->rx_buf)
		abort();
}

void mig_conn_fini(struct mig_conn *c)
{
	free(c->rx_buf);
	c->rx_buf = NULL;
	pthread_mutex_destroy(&c->wlock);
}

static int wait_fd(int fd, short ev, int timeout_ms)
{
	struct pollfd p = {.fd = fd, .events = ev};
	for (;;) {
		int n = poll(&p, 1, timeout_ms);
		if (n > 0)
			return 0;
		if (n == 0)
			return -ETIMEDOUT;
		if (errno != EINTR)
			return -errno;
	}
}

static int write_all(struct mig_conn *c, struct iovec *iov, int niov)
{
	while (niov > 0) {
		struct msghdr mh = {.msg_iov = iov, .msg_iovlen = (size_t)niov};
		ssize_t n = sendmsg(c->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN)
				return -errno;
			int r = wait_fd(c->fd, POLLOUT, c->timeout_ms);
			if (r < 0)
				return r;
			continue;
		}
		size_t left = (size_t)n;
		while (niov > 0 && left >= iov->iov_len) {
			left -= iov->iov_len;
			iov++;
			niov--;
		}
		if (niov > 0) {
			iov->iov_base = (uint8_t *)iov->iov_base + left;
			iov->iov_len -= left;
		}
	}
	return 0;
}

/* Holds the average rate since the reference point at or under the cap. */
static void pace(struct mig_conn *c)
{
	uint64_t now = mv_now_ns();
	if (!c->bw_t0) {
		c->bw_t0 = now;
		c->bw_b0 = c->tx_bytes;
		return;
	}
	uint64_t due = c->bw_t0 + (c->tx_bytes - c->bw_b0) * 1000000000ULL / c->bw_cap;
	if (due > now) {
		struct timespec ts = {.tv_sec = (time_t)((due - now) / 1000000000ULL),
				      .tv_nsec = (long)((due - now) % 1000000000ULL)};
		nanosleep(&ts, NULL);
	}
}

int mig_sendv(struct mig_conn *c, uint16_t type, struct iovec *iov, int niov, uint32_t len,
	      uint32_t crc, struct mv_error **err)
{
	uint8_t hdr[MV_MIGRATE_HDR_SIZE];
	pthread_mutex_lock(&c->wlock);
	mig_hdr_put(hdr, type, len, c->tx_seq, crc);
	iov[0] = (struct iovec){hdr, sizeof(hdr)};
	int r = write_all(c, iov, niov);
	if (r == 0) {
		c->tx_seq++;
		c->tx_bytes += sizeof(hdr) + len;
	}
	pthread_mutex_unlock(&c->wlock);
	if (r < 0)
		return mv_err(err, r, "sending %s frame: %s", mig_type_name(type),
			      r == -ETIMEDOUT ? "peer stopped reading (timeout)" : strerror(-r));
	if (c->bw_cap)
		pace(c);
	return 0;
}

int mig_send(struct mig_conn *c, uint16_t type, const void *payload, uint32_t len,
	     struct mv_error **err)
{
	struct iovec iov[2] = {{NULL, 0}, {(void *)(uintptr_t)payload, len}};
	return mig_sendv(c, type, iov, len ? 2 : 1, len, mv_crc32c(0, payload, len), err);
}

/* What a non-blocking recv's result n means for a reader: 0 to go on (data,
 * or a retry after EINTR or after waiting for more), -EPIPE at end of stream,
 * another -errno on error or timeout. */
static int rx_result(struct mig_conn *c, ssize_t n, int timeout_ms)
{
	if (n > 0)
		return 0;
	if (n == 0)
		return -EPIPE;
	if (errno == EINTR)
		return 0;
	if (errno != EAGAIN)
		return -errno;
	return wait_fd(c->fd, POLLIN, timeout_ms);
}

/* Reads exactly the bytes iov describes (iov is consumed), RX_CHUNK at a
 * time, accumulating their CRC-32C into *crc (may be NULL) right after
 * each recv, while they are still in cache. */
int mig_readv(struct mig_conn *c, struct iovec *iov, int niov, int timeout_ms, uint32_t *crc)
{
	for (;;) {
		while (niov > 0 && iov->iov_len == 0) {   /* nothing to read there */
			iov++;
			niov--;
		}
		if (niov == 0)
			return 0;
		/* At most RX_CHUNK bytes per call: checksummed while in cache. */
		struct iovec sub[64];
		int k = 0;
		size_t want = 0;
		while (k < niov && k < (int)MV_ARRAY_SIZE(sub) && want < RX_CHUNK) {
			sub[k] = iov[k];
			if (sub[k].iov_len > RX_CHUNK - want)
				sub[k].iov_len = RX_CHUNK - want;
			want += sub[k++].iov_len;
		}
		struct msghdr mh = {.msg_iov = sub, .msg_iovlen = (size_t)k};
		ssize_t n = recvmsg(c->fd, &mh, MSG_DONTWAIT);
		int r = rx_result(c, n, timeout_ms);
		if (r < 0)
			return r;
		if (n < 0)
			continue;
		size_t left = (size_t)n;
		while (left > 0) {
			size_t take = left < iov->iov_len ? left : iov->iov_len;
			if (crc)
				*crc = mv_crc32c(*crc, iov->iov_base, take);
			left -= take;
			iov->iov_base = (uint8_t *)iov->iov_base + take;
			iov->iov_len -= take;
			if (iov->iov_len == 0) {
				iov++;
				niov--;
			}
		}
	}
}

int mig_recv_hdr(struct mig_conn *c, int timeout_ms, struct mv_error **err)
{
	uint8_t hdr[MV_MIGRATE_HDR_SIZE];
	struct iovec iov = {hdr, sizeof(hdr)};
	int r = mig_readv(c, &iov, 1, timeout_ms, NULL);
	if (r == -EPIPE && iov.iov_len == sizeof(hdr))   /* closed between frames */
		return mv_err(err, -EPIPE, "peer closed the connection");
	if (r < 0)
		return mv_err(err, r, "reading frame header: %s",
			      r == -ETIMEDOUT ? "timed out" : r == -EPIPE ? "peer closed mid-frame"
			      : strerror(-r));
	struct mig_hdr *h = &c->rx_hdr;
	r = mig_hdr_get(hdr, h, err);
	if (r < 0)
		return r;
	if (h->seq != c->rx_seq)
		return mv_err(err, -EPROTO, "%s frame has sequence %u, expected %u (lost or replayed)",
			      mig_type_name(h->type), h->seq, c->rx_seq);
	return 0;
}

void mig_recv_done(struct mig_conn *c)
{
	c->rx_seq++;
	c->rx_bytes += MV_MIGRATE_HDR_SIZE + c->rx_hdr.len;
}

int mig_recv_payload(struct mig_conn *c, int timeout_ms, struct mv_error **err)
{
	const struct mig_hdr *h = &c->rx_hdr;
	struct iovec iov = {c->rx_buf, h->len};
	uint32_t crc = 0;
	int r = mig_readv(c, &iov, 1, timeout_ms, &crc);
	if (r < 0)
		return mv_err(err, r, "reading %s payload: %s", mig_type_name(h->type),
			      r == -ETIMEDOUT ? "timed out" : r == -EPIPE ? "peer closed mid-frame"
			      : strerror(-r));
	if (crc != h->payload_crc)
		return mv_err(err, -EBADMSG, "%s frame (seq %u) payload checksum mismatch",
			      mig_type_name(h->type), h->seq);
	mig_recv_done(c);
	return 0;
}

int mig_recv(struct mig_conn *c, int timeout_ms, struct mv_error **err)
{
	int r = mig_recv_hdr(c, timeout_ms, err);
	return r < 0 ? r : mig_recv_payload(c, timeout_ms, err);
}

bool mig_readable(struct mig_conn *c)
{
	return wait_fd(c->fd, POLLIN, 0) == 0;
}

void mig_send_nack(struct mig_conn *c, int code, const char *msg)
{
	uint8_t buf[8 + MIG_NACK_MAX_MSG];
	if (code >= 0 || code < -4095)
		code = -EIO;
	size_t n = mig_nack_put(buf, code, msg);
	int saved = c->timeout_ms;
	c->timeout_ms = 1000;   /* never hang on a peer that stopped reading */
	if (mig_send(c, MIG_NACK, buf, (uint32_t)n, NULL) < 0)
		mv_log(MV_LOG_DEBUG, "migrate: NACK not sent");
	c->timeout_ms = saved;
}

void mig_fail_peer(struct mig_conn *c, int code, const char *msg)
{
	mig_send_nack(c, code, msg);
	shutdown(c->fd, SHUT_WR);
	/* Unread input would turn our close into a TCP reset that can drop the
	 * NACK; read until the peer closes or a second passes. */
	uint64_t end = mv_now_ns() + 1000000000ULL;
	for (;;) {
		uint64_t now = mv_now_ns();
		if (now >= end || wait_fd(c->fd, POLLIN, (int)((end - now) / 1000000)) < 0)
			break;
		ssize_t n = recv(c->fd, c->rx_buf, MV_MIGRATE_MAX_PAYLOAD, MSG_DONTWAIT);
		if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
			break;
	}
}

bool mig_page_is_zero(const uint8_t *p)
{
	const uint64_t *w = (const uint64_t *)(const void *)p;
	uint64_t acc = 0;
	for (size_t i = 0; i < MV_MIGRATE_PAGE_SIZE / 8; i += 8) {
		for (size_t k = 0; k < 8; k++)
			acc |= w[i + k];
		if (acc)
			return false;
	}
	return true;
}
