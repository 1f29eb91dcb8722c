/* The VM's migration configuration (regions, vCPUs, workload) and the
 * destination's first step: reading HEADER and CONFIG (memvisord does this
 * to admit the VM and allocate its RAM before a VMM takes the socket), or
 * refusing with a NACK. Also the phase names shown by the CLI and API. */
#include <errno.h>
#include <string.h>
#include "memvisor/util.h"
#include "migrate_i.h"

const char *mv_migrate_phase_name(uint32_t phase)
{
	static const char *const names[] = {"setup", "precopy", "stopcopy", "postcopy", "done", "failed"};
	return phase < MV_ARRAY_SIZE(names) ? names[phase] : "?";
}

void mv_migrate_config_init(struct mv_migrate_config *cfg, struct mv_guest_mem *m, uint32_t nvcpus,
			    const struct mv_wl_params *wl, const char *vm_name)
{
	memset(cfg, 0, sizeof(*cfg));
	if (vm_name)
		strncpy(cfg->vm_name, vm_name, sizeof(cfg->vm_name) - 1);
	cfg->nregions = mv_guest_mem_nregions(m);
	for (unsigned i = 0; i < cfg->nregions; i++) {
		const struct mv_mem_region *r = mv_guest_mem_region(m, i);
		cfg->regions[i].gpa = r->gpa;
		cfg->regions[i].size = r->size;
		cfg->regions[i].flags = r->flags;
	}
	cfg->nvcpus = nvcpus;
	if (wl)
		cfg->wl = *wl;
}

uint64_t mv_migrate_config_ram_size(const struct mv_migrate_config *cfg)
{
	uint64_t t = 0;
	for (uint32_t i = 0; i < cfg->nregions && i < MV_MEM_MAX_REGIONS; i++)
		t += cfg->regions[i].size;
	return t;
}

int mv_migrate_config_match(const struct mv_migrate_config *cfg, struct mv_guest_mem *m,
			    struct mv_error **err)
{
	int r = mig_config_validate(cfg, err);
	if (r < 0)
		return r;
	if (mv_guest_mem_nregions(m) != cfg->nregions)
		return mv_err(err, -EINVAL, "guest memory has %u regions, the config %u",
			      mv_guest_mem_nregions(m), cfg->nregions);
	for (unsigned i = 0; i < cfg->nregions; i++) {
		const struct mv_mem_region *g = mv_guest_mem_region(m, i);
		const struct mv_migrate_region *c = &cfg->regions[i];
		if (g->gpa != c->gpa || g->size != c->size ||
		    (g->flags & MV_MEM_HUGETLB) != (c->flags & MV_MEM_HUGETLB))
			return mv_err(err, -EINVAL,
				      "region %u: memory 0x%llx+0x%llx flags %u, config 0x%llx+0x%llx flags %u",
				      i, (unsigned long long)g->gpa, (unsigned long long)g->size, g->flags,
				      (unsigned long long)c->gpa, (unsigned long long)c->size, c->flags);
	}
	return 0;
}

/* Reads one frame; a NACK becomes the error it carries. */
static int recv_expect(struct mig_conn *c, uint16_t type, int timeout_ms, struct mv_error **err)
{
	int r = mig_recv(c, timeout_ms, err);
	if (r < 0)
		return r;
	if (c->rx_hdr.type == MIG_NACK) {
		int code;
		char msg[MIG_NACK_MAX_MSG + 1];
		r = mig_nack_get(c->rx_buf, c->rx_hdr.len, &code, msg, sizeof(msg), err);
		return r < 0 ? r : mv_err(err, code, "peer refused: %s", msg);
	}
	if (c->rx_hdr.type != type)
		return mv_err(err, -EPROTO, "expected a %s frame, got %s", mig_type_name(type),
			      mig_type_name(c->rx_hdr.type));
	return 0;
}

int mv_migrate_recv_config(int sock, struct mv_migrate_config *cfg, struct mv_migrate_opts *opts,
			   int timeout_ms, struct mv_error **err)
{
	struct mig_conn c;
	struct mig_header h;
	mig_conn_init(&c, sock, timeout_ms, 0);
	int r = recv_expect(&c, MIG_HEADER, timeout_ms, err);
	if (r == 0)
		r = mig_header_get(c.rx_buf, c.rx_hdr.len, &h, err);
	if (r == 0)
		r = recv_expect(&c, MIG_CONFIG, timeout_ms, err);
	if (r == 0)
		r = mig_config_get(c.rx_buf, c.rx_hdr.len, cfg, err);
	if (r < 0 && r != -EPIPE && !(c.rx_hdr.type == MIG_NACK && c.rx_seq > 0))
		mig_send_nack(&c, r, err && *err ? (*err)->msg : strerror(-r));
	mig_conn_fini(&c);
	if (r < 0) {
		mv_err_prefix(err, "migration config");
		return r;
	}
	memset(opts, 0, sizeof(*opts));
	opts->features = h.features;
	opts->downtime_ms = h.downtime_ms;
	opts->postcopy_after = h.postcopy_after;
	return 0;
}

int mv_migrate_send_nack(int sock, int code, const char *msg)
{
	/* The daemon answers before any dest->source frame: sequence 0. */
	struct mig_conn c;
	mig_conn_init(&c, sock, 1000, 0);
	uint8_t buf[8 + MIG_NACK_MAX_MSG];
	if (code >= 0 || code < -4095)
		code = -EIO;
	size_t n = mig_nack_put(buf, code, msg);
	int r = mig_send(&c, MIG_NACK, buf, (uint32_t)n, NULL);
	mig_conn_fini(&c);
	return r;
}
