/* Control-channel frame codec: the one place that knows the wire layout
 * (docs/formats/control-channel.md). Pure functions over byte buffers, so the
 * fuzz target and tests reach them without sockets. */
#include <errno.h>
#include <stddef.h>
#include <string.h>
#include "memvisor/ctl.h"
#include "memvisor/util.h"

#define HDR_LEN 32u
#define TRAILER_LEN 4u

static void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static void put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}
static uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

int mv_ctl_encode(const struct mv_ctl_msg *m, uint8_t *buf, size_t cap)
{
	if (m->payload_len > MV_CTL_MAX_PAYLOAD || m->nfds > MV_CTL_MAX_FDS)
		return -EINVAL;
	size_t total = HDR_LEN + m->payload_len + TRAILER_LEN;
	if (cap < total)
		return -ENOBUFS;
	put32(buf, MV_CTL_MAGIC);
	put16(buf + 4, MV_CTL_VERSION);
	put16(buf + 6, m->type);
	put32(buf + 8, m->seq);
	put32(buf + 12, (uint32_t)m->status);
	put32(buf + 16, m->payload_len);
	put16(buf + 20, (uint16_t)m->nfds);
	put16(buf + 22, m->flags);
	put32(buf + 24, mv_crc32c(0, m->payload, m->payload_len));
	put32(buf + 28, mv_crc32c(0, buf, 28));
	memcpy(buf + HDR_LEN, m->payload, m->payload_len);
	put32(buf + HDR_LEN + m->payload_len, MV_CTL_TRAILER);
	return (int)total;
}

int mv_ctl_decode_hdr(const uint8_t *buf, size_t len, struct mv_ctl_hdr *h, struct mv_error **err)
{
	if (len < HDR_LEN)
		return mv_err(err, -EPROTO, "control frame: %zu bytes is shorter than a header", len);
	h->magic = get32(buf);
	h->version = get16(buf + 4);
	h->type = get16(buf + 6);
	h->seq = get32(buf + 8);
	h->status = (int32_t)get32(buf + 12);
	h->payload_len = get32(buf + 16);
	h->nfds = get16(buf + 20);
	h->flags = get16(buf + 22);
	h->payload_crc = get32(buf + 24);
	h->hdr_crc = get32(buf + 28);
	if (h->magic != MV_CTL_MAGIC)
		return mv_err(err, -EPROTO, "control frame: bad magic 0x%08x", h->magic);
	if (h->hdr_crc != mv_crc32c(0, buf, 28))
		return mv_err(err, -EBADMSG, "control frame: header checksum mismatch");
	if (h->version != MV_CTL_VERSION)
		return mv_err(err, -EPROTONOSUPPORT, "control frame: version %u, expected %u",
			      h->version, MV_CTL_VERSION);
	if (h->type == 0 || h->type >= MV_CTL__COUNT)
		return mv_err(err, -EPROTO, "control frame: unknown type %u", h->type);
	if (h->flags & ~MV_CTL_F_REPLY)
		return mv_err(err, -EPROTO, "control frame: unknown flags 0x%x", h->flags);
	if (h->payload_len > MV_CTL_MAX_PAYLOAD)
		return mv_err(err, -EMSGSIZE, "control frame: payload %u bytes exceeds %u",
			      h->payload_len, MV_CTL_MAX_PAYLOAD);
	if (h->nfds > MV_CTL_MAX_FDS)
		return mv_err(err, -EPROTO, "control frame: %u fds exceeds %u", h->nfds, MV_CTL_MAX_FDS);
	if (h->status > 0 || h->status < -4095)
		return mv_err(err, -EPROTO, "control frame: status %d is not 0 or -errno", h->status);
	if (h->status != 0 && !(h->flags & MV_CTL_F_REPLY))
		return mv_err(err, -EPROTO, "control frame: a request carries a status");
	return 0;
}

/* Payload size each type must carry: requests / replies. */
static uint32_t expected_len(uint16_t type, bool reply)
{
	switch (type) {
	case MV_CTL_HELLO: return reply ? 0 : sizeof(struct mv_ctl_hello);
	case MV_CTL_SETUP: return reply ? 0 : sizeof(struct mv_ctl_setup);
	case MV_CTL_STATUS: return reply ? sizeof(struct mv_ctl_status) : 0;
	case MV_CTL_VERIFY: return reply ? sizeof(struct mv_ctl_verify) : 0;
	case MV_CTL_GET_MEM: return reply ? sizeof(struct mv_ctl_mem) : 0;
	case MV_CTL_SAVE_STATE: return reply ? sizeof(struct mv_ctl_states) : 0;
	case MV_CTL_MIGRATE_OUT: return reply ? 0 : sizeof(struct mv_ctl_migrate_out);
	case MV_CTL_MIGRATE_IN: return reply ? 0 : sizeof(struct mv_ctl_migrate_in);
	case MV_CTL_FUSE: return reply ? sizeof(struct mv_ctl_fuse_reply) : sizeof(struct mv_ctl_fuse);
	case MV_CTL_UNFUSE: return reply ? sizeof(struct mv_ctl_unfuse) : 0;
	case MV_CTL_GUARD:
		return reply ? sizeof(struct mv_ctl_guard_reply) : sizeof(struct mv_ctl_guard);
	case MV_CTL_SAMPLE:
		return reply ? sizeof(struct mv_ctl_sample_reply) : sizeof(struct mv_ctl_sample);
	case MV_CTL_THROTTLE: return reply ? 0 : sizeof(struct mv_ctl_throttle);
	case MV_CTL_RELOCATE:
		return reply ? sizeof(struct mv_ctl_relocate_reply) : sizeof(struct mv_ctl_relocate);
	default: return 0;
	}
}

static bool has_nul(const char *s, size_t cap)
{
	return memchr(s, '\0', cap) != NULL;
}

static int check_states(const struct mv_wl_state *st, uint32_t n, struct mv_error **err)
{
	for (uint32_t i = 0; i < n; i++) {
		if (st[i].vcpu != i || st[i].kind >= MV_WL__COUNT || st[i].kind != st[i].p.kind ||
		    st[i].p.pattern >= MV_PAT__COUNT || st[i].gpa_base + st[i].gpa_len < st[i].gpa_base)
			return mv_err(err, -EPROTO, "control frame: vCPU %u state is malformed", i);
	}
	return 0;
}

/* Counts within bounds; the spans themselves are checked against guest RAM
 * by the stream decoder (CONFIG) and the daemon that registers them. */
static bool tenant_ok(const struct mv_migrate_tenant *t)
{
	return !(t->flags & ~MV_MIGRATE_TENANT_FUSION) && t->nsensitive <= MV_MIGRATE_MAX_SENSITIVE &&
	       t->nkeep <= MV_MIGRATE_MAX_KEEP;
}

static int check_regions(const struct mv_ctl_region *r, uint32_t n, unsigned nfds,
			 struct mv_error **err)
{
	if (n == 0 || n > MV_MEM_MAX_REGIONS || n != nfds)
		return mv_err(err, -EPROTO, "control frame: %u regions with %u fds", n, nfds);
	struct mv_mem_layout l = {.n = n};
	for (uint32_t i = 0; i < n; i++) {
		l.r[i].gpa = r[i].gpa;
		l.r[i].size = r[i].size;
		l.r[i].flags = r[i].flags;
		l.r[i].fd = -1;
	}
	return mv_mem_layout_validate(&l, false, err);
}

int mv_ctl_validate_payload(const struct mv_ctl_msg *m, struct mv_error **err)
{
	bool reply = m->flags & MV_CTL_F_REPLY;
	uint32_t want = expected_len(m->type, reply);
	if (reply && m->status != 0)
		want = 0;   /* error replies carry nothing */
	if (m->payload_len != want)
		return mv_err(err, -EPROTO, "control frame type %u: payload %u bytes, expected %u",
			      m->type, m->payload_len, want);
	bool fds_ok = ((m->type == MV_CTL_SETUP || m->type == MV_CTL_MIGRATE_OUT ||
			m->type == MV_CTL_MIGRATE_IN || m->type == MV_CTL_FUSE) && !reply) ||
		      (m->type == MV_CTL_GET_MEM && reply && m->status == 0);
	if (m->nfds && !fds_ok)
		return mv_err(err, -EPROTO, "control frame type %u carries fds", m->type);
	if (want == 0)
		return 0;
	switch (m->type) {
	case MV_CTL_HELLO: {
		struct mv_ctl_hello h;
		memcpy(&h, m->payload, sizeof(h));
		if (!has_nul(h.vm_id, sizeof(h.vm_id)) || h.pid <= 0 || h.state > MV_VMM_STOPPING ||
		    h.ready > 1)
			return mv_err(err, -EPROTO, "control HELLO: bad field");
		return 0;
	}
	case MV_CTL_SETUP: {
		struct mv_ctl_setup s;
		memcpy(&s, m->payload, sizeof(s));
		if (s.nvcpus == 0 || s.nvcpus > MV_MAX_VCPUS || s.start_paused > 1 ||
		    s.dirty_tracking > 1 || s.wl.kind >= MV_WL__COUNT || s.wl.pattern >= MV_PAT__COUNT ||
		    s.resume > 1 || s.no_thp > 1)
			return mv_err(err, -EPROTO, "control SETUP: bad field");
		if (s.resume && check_states(s.states, s.nvcpus, err) < 0)
			return -EPROTO;
		return check_regions(s.regions, s.nregions, m->nfds, err);
	}
	case MV_CTL_STATUS: {
		struct mv_ctl_status s;
		memcpy(&s, m->payload, sizeof(s));
		if (s.state > MV_VMM_STOPPING || s.nvcpus > MV_MAX_VCPUS ||
		    !has_nul(s.dirty_backend, sizeof(s.dirty_backend)) || s.migrating > 1 ||
		    s.mig_result > 2 || s.mig.phase > MV_MIGRATE_FAILED ||
		    !has_nul(s.mig_error, sizeof(s.mig_error)))
			return mv_err(err, -EPROTO, "control STATUS: bad field");
		return 0;
	}
	case MV_CTL_VERIFY: {
		struct mv_ctl_verify v;
		memcpy(&v, m->payload, sizeof(v));
		if (v.ok > 1 || !has_nul(v.message, sizeof(v.message)))
			return mv_err(err, -EPROTO, "control VERIFY: bad field");
		return 0;
	}
	case MV_CTL_MIGRATE_OUT: {
		static _Thread_local struct mv_ctl_migrate_out o;
		memcpy(&o, m->payload, sizeof(o));
		if (m->nfds != 1 || o.opts.features & ~MV_MIGRATE_F_ALL ||
		    !has_nul(o.opts.vm_name, sizeof(o.opts.vm_name)) || !tenant_ok(&o.tenant))
			return mv_err(err, -EPROTO, "control MIGRATE_OUT: bad field");
		return 0;
	}
	case MV_CTL_MIGRATE_IN: {
		struct mv_ctl_migrate_in in;
		memcpy(&in, m->payload, sizeof(in));
		if (in.opts.features & ~MV_MIGRATE_F_ALL || in.cfg.nvcpus == 0 ||
		    in.cfg.nvcpus > MV_MAX_VCPUS || in.cfg.nregions + 1 != m->nfds ||
		    !tenant_ok(&in.cfg.tenant))
			return mv_err(err, -EPROTO, "control MIGRATE_IN: bad field");
		struct mv_ctl_region r[MV_MEM_MAX_REGIONS];
		for (uint32_t i = 0; i < in.cfg.nregions && i < MV_MEM_MAX_REGIONS; i++)
			r[i] = (struct mv_ctl_region){.gpa = in.cfg.regions[i].gpa,
						      .size = in.cfg.regions[i].size,
						      .flags = in.cfg.regions[i].flags};
		return check_regions(r, in.cfg.nregions, m->nfds - 1, err);
	}
	case MV_CTL_SAVE_STATE: {
		struct mv_ctl_states g;
		memcpy(&g, m->payload, sizeof(g));
		if (g.nvcpus == 0 || g.nvcpus > MV_MAX_VCPUS)
			return mv_err(err, -EPROTO, "control SAVE_STATE: %u vCPUs", g.nvcpus);
		return check_states(g.states, g.nvcpus, err);
	}
	case MV_CTL_FUSE: {
		if (reply) {
			struct mv_ctl_fuse_reply f;
			memcpy(&f, m->payload, sizeof(f));
			if (f.n > MV_CTL_FUSE_MAX || f.nbroken > MV_CTL_BROKEN_MAX || f.more > 1)
				return mv_err(err, -EPROTO, "control FUSE reply: bad field");
			for (uint32_t i = 0; i < f.n; i++)
				if (f.result[i] > MV_FUSE_SKIP)
					return mv_err(err, -EPROTO, "control FUSE reply: bad result");
			return 0;
		}
		struct mv_ctl_fuse f;
		memcpy(&f, m->payload, sizeof(f));
		if (f.n > MV_CTL_FUSE_MAX || m->nfds > 1 || (m->nfds && f.pool_size % MV_PAGE_SIZE))
			return mv_err(err, -EPROTO, "control FUSE: bad field");
		for (uint32_t i = 0; i < f.n; i++)
			if (f.e[i].gpa % MV_PAGE_SIZE || f.e[i].pool_off % MV_PAGE_SIZE)
				return mv_err(err, -EPROTO, "control FUSE: entry %u is not page aligned", i);
		return 0;
	}
	case MV_CTL_GUARD: {
		if (reply) {
			struct mv_ctl_guard_reply g;
			memcpy(&g, m->payload, sizeof(g));
			if (g.nregions > MV_MEM_MAX_REGIONS)
				return mv_err(err, -EPROTO, "control GUARD reply: %u regions", g.nregions);
			return 0;
		}
		struct mv_ctl_guard g;
		memcpy(&g, m->payload, sizeof(g));
		if (g.op > MV_GUARD_OP_KEEP || g.gpa % MV_PAGE_SIZE || g.len % MV_PAGE_SIZE ||
		    (g.op != MV_GUARD_OP_QUERY && (g.len == 0 || g.gpa + g.len < g.gpa)))
			return mv_err(err, -EPROTO, "control GUARD: bad field");
		return 0;
	}
	case MV_CTL_SAMPLE: {
		if (reply) {
			struct mv_ctl_sample_reply sr;
			memcpy(&sr, m->payload, sizeof(sr));
			if (sr.n > MV_CTL_SAMPLE_MAX)
				return mv_err(err, -EPROTO, "control SAMPLE reply: %u pages", sr.n);
			for (uint32_t i = 0; i < sr.n; i++)
				if (sr.nwin[i] > 64 || sr.gpa[i] % MV_PAGE_SIZE)
					return mv_err(err, -EPROTO, "control SAMPLE reply: bad page %u", i);
			return 0;
		}
		struct mv_ctl_sample s;
		memcpy(&s, m->payload, sizeof(s));
		if (s.n > MV_CTL_SAMPLE_MAX)
			return mv_err(err, -EPROTO, "control SAMPLE: %u pages", s.n);
		if (s.n && (s.window_us < MV_CTL_SAMPLE_WINDOW_MIN_US ||
			    s.window_us > MV_CTL_SAMPLE_WINDOW_MAX_US))
			return mv_err(err, -EPROTO, "control SAMPLE: window_us %u", s.window_us);
		for (uint32_t i = 0; i < s.n; i++)
			if (s.gpa[i] % MV_PAGE_SIZE)
				return mv_err(err, -EPROTO, "control SAMPLE: page %u is not aligned", i);
		return 0;
	}
	case MV_CTL_THROTTLE: {
		struct mv_ctl_throttle t;
		memcpy(&t, m->payload, sizeof(t));
		if (t.pct > 99)
			return mv_err(err, -EPROTO, "control THROTTLE: %u%%", t.pct);
		return 0;
	}
	case MV_CTL_RELOCATE: {
		if (reply)
			return 0;
		struct mv_ctl_relocate rl;
		memcpy(&rl, m->payload, sizeof(rl));
		if (rl.gpa % MV_PAGE_SIZE || rl.len % MV_PAGE_SIZE || rl.len == 0 ||
		    rl.gpa + rl.len < rl.gpa)
			return mv_err(err, -EPROTO, "control RELOCATE: bad range");
		return 0;
	}
	case MV_CTL_GET_MEM: {
		struct mv_ctl_mem g;
		memcpy(&g, m->payload, sizeof(g));
		return check_regions(g.regions, g.nregions, m->nfds, err);
	}
	default:
		return 0;
	}
}

int mv_ctl_decode(const uint8_t *buf, size_t len, struct mv_ctl_msg *out, struct mv_error **err)
{
	struct mv_ctl_hdr h;
	int r = mv_ctl_decode_hdr(buf, len, &h, err);
	if (r < 0)
		return r;
	if (len != HDR_LEN + (size_t)h.payload_len + TRAILER_LEN)
		return mv_err(err, -EPROTO, "control frame: %zu bytes, header says %u", len,
			      HDR_LEN + h.payload_len + TRAILER_LEN);
	if (mv_crc32c(0, buf + HDR_LEN, h.payload_len) != h.payload_crc)
		return mv_err(err, -EBADMSG, "control frame: payload checksum mismatch");
	if (get32(buf + HDR_LEN + h.payload_len) != MV_CTL_TRAILER)
		return mv_err(err, -EPROTO, "control frame: missing end marker");
	out->type = h.type;
	out->flags = h.flags;
	out->seq = h.seq;
	out->status = h.status;
	out->payload_len = h.payload_len;
	memcpy(out->payload, buf + HDR_LEN, h.payload_len);
	out->nfds = h.nfds;
	return mv_ctl_validate_payload(out, err);
}

void mv_ctl_msg_init(struct mv_ctl_msg *m, uint16_t type, const void *payload, uint32_t len)
{
	memset(m, 0, offsetof(struct mv_ctl_msg, payload));
	m->type = type;
	m->payload_len = len;
	if (len)
		memcpy(m->payload, payload, len);
	m->nfds = 0;
}
