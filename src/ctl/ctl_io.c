/* Control-channel socket I/O: one frame per call, fds via SCM_RIGHTS, and a
 * request/reply helper. Used by memvisord (client) and memvisor-vmm (server). */
#include <errno.h>
#include <string.h>
#include <unistd.h>
#include "memvisor/ctl.h"
#include "memvisor/util.h"

void mv_ctl_msg_close_fds(struct mv_ctl_msg *m)
{
	for (unsigned i = 0; i < m->nfds; i++)
		if (m->fds[i] >= 0)
			close(m->fds[i]);
	m->nfds = 0;
}

int mv_ctl_send(int sock, const struct mv_ctl_msg *m)
{
	uint8_t buf[32 + MV_CTL_MAX_PAYLOAD + 4];
	int n = mv_ctl_encode(m, buf, sizeof(buf));
	if (n < 0)
		return n;
	return mv_send_fds(sock, buf, (size_t)n, m->fds, m->nfds);
}

int mv_ctl_recv(int sock, struct mv_ctl_msg *m, int timeout_ms, struct mv_error **err)
{
	uint8_t buf[32 + MV_CTL_MAX_PAYLOAD + 4];
	int fds[MV_CTL_MAX_FDS];
	unsigned nfds = MV_CTL_MAX_FDS;
	struct mv_ctl_hdr h;
	int r = mv_recv_fds(sock, buf, 32, fds, &nfds, timeout_ms);
	if (r < 0)
		return mv_err(err, r, "control channel: %s", r == -EPIPE ? "peer closed" : strerror(-r));
	r = mv_ctl_decode_hdr(buf, 32, &h, err);
	if (r < 0)
		goto fail;
	unsigned more = MV_CTL_MAX_FDS - nfds;
	r = mv_recv_fds(sock, buf + 32, h.payload_len + 4, fds + nfds, &more, timeout_ms);
	if (r < 0) {
		mv_err(err, r, "control channel: short frame: %s", strerror(-r));
		goto fail;
	}
	nfds += more;
	if (nfds != h.nfds) {
		r = mv_err(err, -EPROTO, "control frame: header says %u fds, got %u", h.nfds, nfds);
		goto fail;
	}
	r = mv_ctl_decode(buf, 32 + h.payload_len + 4, m, err);
	if (r < 0)
		goto fail;
	memcpy(m->fds, fds, sizeof(int) * nfds);
	m->nfds = nfds;
	return 0;
fail:
	for (unsigned i = 0; i < nfds; i++)
		close(fds[i]);
	m->nfds = 0;
	return r;
}

int mv_ctl_call(int sock, struct mv_ctl_msg *req, struct mv_ctl_msg *reply, int timeout_ms,
		struct mv_error **err)
{
	int r = mv_ctl_send(sock, req);
	if (r < 0)
		return mv_err(err, r, "control channel: send: %s", strerror(-r));
	for (;;) {
		r = mv_ctl_recv(sock, reply, timeout_ms, err);
		if (r < 0)
			return r;
		if ((reply->flags & MV_CTL_F_REPLY) && reply->seq == req->seq &&
		    reply->type == req->type)
			break;
		mv_ctl_msg_close_fds(reply);   /* a stale reply to a timed-out call */
	}
	if (reply->status < 0) {
		mv_ctl_msg_close_fds(reply);
		return mv_err(err, reply->status, "vmm refused: %s", strerror(-reply->status));
	}
	return 0;
}
