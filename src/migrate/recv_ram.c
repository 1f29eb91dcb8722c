/* The destination's RAM frames straight into guest RAM, for guests whose
 * RAM is all huge-page backed (hugetlbfs or shmem THP): the entry table is
 * read first, then one recvmsg per 128 KiB lands every RAW page at its
 * guest address and the frame checksum is computed there, in cache, right
 * after. A huge-page fault (one per 2 MiB) is cheap, so this beats a
 * bounce buffer plus a copy. 4 KiB shmem is left to the applier (apply.c):
 * faulting 4 KiB pages in through a mapping costs more than pwritev.
 * A frame that fails its checksum has already written guest RAM here; the
 * migration then fails and this VM never runs, so nothing reads it.
 * Used by recv.c before post-copy (after, pages must go through UFFDIO_COPY). */
#include <errno.h>
#include <string.h>
#include "memvisor/util.h"
#include "migrate_i.h"

bool mig_ram_direct_ok(struct mv_guest_mem *mem)
{
	for (unsigned i = 0; i < mv_guest_mem_nregions(mem); i++)
		if (mv_guest_mem_region(mem, i)->pages == MV_MEM_PAGES_4K)
			return false;
	return mv_guest_mem_nregions(mem) > 0;
}

/* Is there a RAW entry for the same page after entry i? (It wins: its
 * data lands before entry i is applied.) */
static bool overwritten_later(const struct mig_page *pages, uint32_t n, uint32_t i)
{
	for (uint32_t j = i + 1; j < n; j++)
		if (pages[j].gpa == pages[i].gpa && pages[j].enc == MIG_ENC_RAW)
			return true;
	return false;
}

int mig_ram_recv_direct(struct mig_conn *c, struct mv_guest_mem *mem,
			const struct mv_migrate_config *cfg, uint32_t features, void *zd,
			struct mig_page *pages, uint32_t *count, int timeout_ms, struct mv_error **err)
{
	const struct mig_hdr *h = &c->rx_hdr;
	uint8_t *buf = c->rx_buf;
	uint32_t crc = 0, n;
	if (h->len < 8)
		return mv_err(err, -EPROTO, "RAM payload of %u bytes is too short", h->len);
	struct iovec iov[MV_MIGRATE_MAX_BATCH + 1];
	iov[0] = (struct iovec){buf, 8};
	int r = mig_readv(c, iov, 1, timeout_ms, &crc);
	if (r == 0)
		r = mig_ram_count_get(buf, &n, err);
	else
		return mv_err(err, r, "reading RAM payload: %s", strerror(-r));
	if (r < 0)
		return r;
	size_t table = 8 + (size_t)n * MIG_PAGE_ENTRY_LEN;
	if (h->len < table)
		return mv_err(err, -EPROTO, "RAM frame of %u entries truncated in its table", n);
	iov[0] = (struct iovec){buf + 8, table - 8};
	r = mig_readv(c, iov, 1, timeout_ms, &crc);
	if (r < 0)
		return mv_err(err, r, "reading RAM payload: %s", strerror(-r));
	uint64_t data_len;
	r = mig_ram_table_get(buf + 8, n, cfg, pages, &data_len, err);
	if (r < 0)
		return r;
	if (data_len != h->len - table)
		return mv_err(err, -EPROTO, "RAM frame data is %zu bytes, its entries say %llu",
			      h->len - table, (unsigned long long)data_len);
	/* RAW pages go to guest RAM (adjacent ones in one iovec), ZSTD data to
	 * where it sits in the payload buffer; ZERO pages carry none. */
	int niov = 0;
	uint8_t *spill = buf + table;
	for (uint32_t i = 0; i < n; i++) {
		struct mig_page *pg = &pages[i];
		if (pg->enc == MIG_ENC_ZSTD && !(features & MV_MIGRATE_F_ZSTD))
			return mv_err(err, -EPROTO, "zstd page in a stream without zstd");
		if (pg->enc == MIG_ENC_ZERO)
			continue;
		uint8_t *to = pg->enc == MIG_ENC_RAW ? mv_gpa_to_hva(mem, pg->gpa, pg->len) : spill;
		if (pg->enc == MIG_ENC_ZSTD)
			spill += pg->len;
		pg->data = to;
		if (niov && (uint8_t *)iov[niov - 1].iov_base + iov[niov - 1].iov_len == to)
			iov[niov - 1].iov_len += pg->len;
		else
			iov[niov++] = (struct iovec){to, pg->len};
	}
	r = mig_readv(c, iov, niov, timeout_ms, &crc);
	if (r < 0)
		return mv_err(err, r, "reading RAM payload: %s",
			      r == -ETIMEDOUT ? "timed out" : r == -EPIPE ? "peer closed mid-frame"
			      : strerror(-r));
	if (crc != h->payload_crc)
		return mv_err(err, -EBADMSG, "RAM frame (seq %u) payload checksum mismatch", h->seq);
	for (uint32_t i = 0; i < n && r == 0; i++) {
		struct mig_page *pg = &pages[i];
		if (pg->enc == MIG_ENC_RAW || overwritten_later(pages, n, i))
			continue;
		uint8_t *hva = mv_gpa_to_hva(mem, pg->gpa, MV_MIGRATE_PAGE_SIZE);
		if (pg->enc == MIG_ENC_ZERO)
			memset(hva, 0, MV_MIGRATE_PAGE_SIZE);
		else
			r = mig_page_inflate(pg, zd, hva, err);
	}
	if (r < 0)
		return r;
	mig_recv_done(c);
	*count = n;
	return 0;
}
