/* Byte messages with attached fds over Unix sockets (SCM_RIGHTS): the control
 * channel between memvisord and memvisor-vmm rides on these two calls. */
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include "memvisor/util.h"

#define MAX_FDS 16

int mv_send_fds(int sock, const void *buf, size_t len, const int *fds, unsigned nfds)
{
	if (nfds > MAX_FDS)
		return -EINVAL;
	union {
		char buf[CMSG_SPACE(sizeof(int) * MAX_FDS)];
		struct cmsghdr align;
	} u;
	const char *p = buf;
	size_t left = len;
	int first = 1;
	while (left > 0) {
		struct iovec iov = {.iov_base = (void *)p, .iov_len = left};
		struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
		if (first && nfds) {
			memset(&u, 0, sizeof(u));
			msg.msg_control = u.buf;
			msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
			struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
			c->cmsg_level = SOL_SOCKET;
			c->cmsg_type = SCM_RIGHTS;
			c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
			memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
		}
		ssize_t n = sendmsg(sock, &msg, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		first = 0;
		p += n;
		left -= (size_t)n;
	}
	return 0;
}

static int wait_readable(int sock, int timeout_ms)
{
	struct pollfd pfd = {.fd = sock, .events = POLLIN};
	for (;;) {
		int r = poll(&pfd, 1, timeout_ms);
		if (r > 0)
			return 0;
		if (r == 0)
			return -ETIMEDOUT;
		if (errno != EINTR)
			return -errno;
	}
}

int mv_recv_fds(int sock, void *buf, size_t len, int *fds, unsigned *nfds, int timeout_ms)
{
	unsigned cap = nfds ? *nfds : 0, got = 0;
	char *p = buf;
	size_t left = len;
	union {
		char buf[CMSG_SPACE(sizeof(int) * MAX_FDS)];
		struct cmsghdr align;
	} u;
	while (left > 0) {
		if (timeout_ms >= 0) {
			int r = wait_readable(sock, timeout_ms);
			if (r < 0)
				return r;
		}
		struct iovec iov = {.iov_base = p, .iov_len = left};
		struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1,
				     .msg_control = u.buf, .msg_controllen = sizeof(u.buf)};
		ssize_t n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
			if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
				continue;
			unsigned k = (unsigned)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
			int tmp[MAX_FDS];
			memcpy(tmp, CMSG_DATA(c), sizeof(int) * (k > MAX_FDS ? MAX_FDS : k));
			for (unsigned i = 0; i < k && i < MAX_FDS; i++) {
				if (got < cap)
					fds[got++] = tmp[i];
				else
					close(tmp[i]);
			}
		}
		if (n == 0)
			return -EPIPE;
		p += n;
		left -= (size_t)n;
	}
	if (nfds)
		*nfds = got;
	return 0;
}
