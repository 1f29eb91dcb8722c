/* The destination side of post-copy: guest RAM is registered with a
 * userfaultfd in MISSING mode, so a vCPU touching a page that is not in the
 * memfd yet blocks; a fault thread turns those faults into PAGE_REQ frames
 * to the source, and the receive loop places arriving pages atomically with
 * UFFDIO_COPY / UFFDIO_ZEROPAGE, which also wakes the faulting vCPUs. Pages
 * already in the memfd (pre-copied) never fault. hugetlb RAM faults and is
 * placed 2 MiB at a time (UFFDIO_COPY takes whole huge pages there, and has
 * no ZEROPAGE): its 4 KiB pages are staged until the huge page is complete;
 * the source sends each one whole, in a row. Used by recv.c.
 * Mechanics as in the kernel's mm selftests (uffd-common.c). */
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>
#include "memvisor/util.h"
#include "migrate_i.h"

#define FAULT_BATCH 64u

struct mig_postcopy {
	struct mv_guest_mem *mem;
	struct mig_conn *c;
	int uffd;
	int stop_fd;          /* eventfd: wakes the fault thread to exit */
	pthread_t th;
	bool th_started;
	int error;            /* __atomic: fault thread send failure */
	uint64_t faults;      /* __atomic */
	/* The huge page being assembled (receive loop only). */
	uint8_t *stage;       /* MV_HUGE_PAGE_SIZE bytes, allocated on first use */
	uint64_t stage_gpa;   /* its first byte's gpa; UINT64_MAX: none */
	uint64_t stage_have[MV_HUGE_PAGE_SIZE / MV_MIGRATE_PAGE_SIZE / 64];
	unsigned stage_n;
};

/* GPA of the page holding hva, or UINT64_MAX. */
static uint64_t hva_to_gpa(struct mv_guest_mem *m, uint64_t hva)
{
	for (unsigned i = 0; i < mv_guest_mem_nregions(m); i++) {
		const struct mv_mem_region *g = mv_guest_mem_region(m, i);
		uint64_t base = (uintptr_t)g->hva;
		if (hva >= base && hva - base < g->size)
			return g->gpa + ((hva - base) & ~(MV_MIGRATE_PAGE_SIZE - 1ULL));
	}
	return UINT64_MAX;
}

static void *fault_main(void *arg)
{
	struct mig_postcopy *pc = arg;
	struct uffd_msg msg[FAULT_BATCH];
	uint64_t gpas[FAULT_BATCH];
	uint8_t buf[8 + 8 * FAULT_BATCH];
	for (;;) {
		struct pollfd p[2] = {{.fd = pc->uffd, .events = POLLIN}, {.fd = pc->stop_fd, .events = POLLIN}};
		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (p[1].revents)
			break;
		ssize_t n = read(pc->uffd, msg, sizeof(msg));
		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				continue;
			break;
		}
		uint32_t k = 0;
		for (size_t i = 0; i < (size_t)n / sizeof(msg[0]); i++) {
			if (msg[i].event != UFFD_EVENT_PAGEFAULT)
				continue;
			uint64_t gpa = hva_to_gpa(pc->mem, msg[i].arg.pagefault.address);
			bool dup = gpa == UINT64_MAX;
			for (uint32_t j = 0; j < k && !dup; j++)
				dup = gpas[j] == gpa;
			if (!dup)
				gpas[k++] = gpa;
		}
		if (!k)
			continue;
		__atomic_add_fetch(&pc->faults, k, __ATOMIC_RELAXED);
		size_t len = mig_gpas_put(buf, gpas, k);
		int r = mig_send(pc->c, MIG_PAGE_REQ, buf, (uint32_t)len, NULL);
		if (r < 0) {
			__atomic_store_n(&pc->error, r, __ATOMIC_RELEASE);
			break;
		}
	}
	return NULL;
}

int mig_postcopy_start(struct mv_guest_mem *mem, const struct mv_migrate_config *cfg,
		       struct mig_conn *c, struct mig_postcopy **out, struct mv_error **err)
{
	struct mig_postcopy *pc = calloc(1, sizeof(*pc));
	if (!pc)
		abort();
	pc->mem = mem;
	pc->c = c;
	pc->stop_fd = -1;
	pc->stage_gpa = UINT64_MAX;
	int r = pc->uffd = mv_uffd_open(0);
	if (r < 0) {
		mv_err(err, r, "userfaultfd: %s", strerror(-r));
		goto fail;
	}
	for (unsigned i = 0; i < mv_guest_mem_nregions(mem); i++) {
		const struct mv_mem_region *g = mv_guest_mem_region(mem, i);
		struct uffdio_register reg = {
			.range = {.start = (uintptr_t)g->hva, .len = g->size},
			.mode = UFFDIO_REGISTER_MODE_MISSING,
		};
		if (ioctl(pc->uffd, UFFDIO_REGISTER, &reg) < 0) {
			r = mv_err(err, -errno, "registering region %u for post-copy: %s%s", i,
				   strerror(errno),
				   errno == EBUSY ? " (a dirty log is already tracking it)" : "");
			goto fail;
		}
		uint64_t need = 1ULL << _UFFDIO_COPY;
		if (g->pages != MV_MEM_PAGES_HUGETLB)
			need |= 1ULL << _UFFDIO_ZEROPAGE;
		if ((reg.ioctls & need) != need) {
			r = mv_err(err, -EOPNOTSUPP, "region %u: no UFFDIO_COPY%s", i,
				   g->pages == MV_MEM_PAGES_HUGETLB ? "" : "/ZEROPAGE");
			goto fail;
		}
	}
	(void)cfg;
	pc->stop_fd = eventfd(0, EFD_CLOEXEC);
	if (pc->stop_fd < 0) {
		r = mv_err(err, -errno, "eventfd: %s", strerror(errno));
		goto fail;
	}
	r = -pthread_create(&pc->th, NULL, fault_main, pc);
	if (r < 0) {
		mv_err(err, r, "starting the fault thread: %s", strerror(-r));
		goto fail;
	}
	pc->th_started = true;
	*out = pc;
	return 0;
fail:
	mig_postcopy_stop(pc);
	return r;
}

/* UFFDIO_COPY (data) or UFFDIO_ZEROPAGE (data NULL) of len bytes at hva. */
static int place(struct mig_postcopy *pc, uint8_t *hva, const uint8_t *data, uint64_t len,
		 uint64_t gpa, struct mv_error **err)
{
	for (;;) {
		int rc;
		if (data) {
			struct uffdio_copy cp = {.dst = (uintptr_t)hva, .src = (uintptr_t)data,
						 .len = len, .mode = 0};
			rc = ioctl(pc->uffd, UFFDIO_COPY, &cp);
		} else {
			struct uffdio_zeropage zp = {.range = {.start = (uintptr_t)hva, .len = len},
						     .mode = 0};
			rc = ioctl(pc->uffd, UFFDIO_ZEROPAGE, &zp);
		}
		/* EEXIST: the page is there already (pre-copied, or placed by an
		 * earlier answer to a request): it is current, keep it. */
		if (rc == 0 || errno == EEXIST)
			return 0;
		if (errno != EAGAIN && errno != EINTR)
			return mv_err(err, -errno, "placing gpa 0x%llx: %s", (unsigned long long)gpa,
				      strerror(errno));
	}
}

/* Adds a 4 KiB page to the huge page being assembled; places it once whole. */
static int stage_page(struct mig_postcopy *pc, const struct mv_mem_region *g, uint64_t gpa,
		      const uint8_t *data, struct mv_error **err)
{
	uint64_t base = g->gpa + ((gpa - g->gpa) & ~(MV_HUGE_PAGE_SIZE - 1));
	if (pc->stage_gpa != base) {
		if (pc->stage_n)
			return mv_err(err, -EPROTO, "gpa 0x%llx arrived before the huge page at 0x%llx "
				      "was complete", (unsigned long long)gpa,
				      (unsigned long long)pc->stage_gpa);
		if (!pc->stage && !(pc->stage = malloc(MV_HUGE_PAGE_SIZE)))
			abort();
		pc->stage_gpa = base;
		memset(pc->stage_have, 0, sizeof(pc->stage_have));
	}
	uint64_t i = (gpa - base) / MV_MIGRATE_PAGE_SIZE;
	if (data)
		memcpy(pc->stage + i * MV_MIGRATE_PAGE_SIZE, data, MV_MIGRATE_PAGE_SIZE);
	else
		memset(pc->stage + i * MV_MIGRATE_PAGE_SIZE, 0, MV_MIGRATE_PAGE_SIZE);
	if (!mig_bit_test(pc->stage_have, i)) {
		mig_bit_set(pc->stage_have, i);
		pc->stage_n++;
	}
	if (pc->stage_n < MV_HUGE_PAGE_SIZE / MV_MIGRATE_PAGE_SIZE)
		return 0;
	pc->stage_n = 0;
	pc->stage_gpa = UINT64_MAX;
	return place(pc, g->hva + (base - g->gpa), pc->stage, MV_HUGE_PAGE_SIZE, base, err);
}

int mig_postcopy_place(struct mig_postcopy *pc, uint64_t gpa, const uint8_t *data,
		       struct mv_error **err)
{
	const struct mv_mem_region *g =
		mv_guest_mem_region(pc->mem, (unsigned)mv_guest_mem_find(pc->mem, gpa));
	if (g->pages == MV_MEM_PAGES_HUGETLB)
		return stage_page(pc, g, gpa, data, err);
	return place(pc, g->hva + (gpa - g->gpa), data, MV_MIGRATE_PAGE_SIZE, gpa, err);
}

int mig_postcopy_check_done(struct mig_postcopy *pc, struct mv_error **err)
{
	if (!pc->stage_n)
		return 0;
	return mv_err(err, -EPROTO, "stream ended with the huge page at 0x%llx incomplete "
		      "(%u of %u pages)", (unsigned long long)pc->stage_gpa, pc->stage_n,
		      (unsigned)(MV_HUGE_PAGE_SIZE / MV_MIGRATE_PAGE_SIZE));
}

int mig_postcopy_error(struct mig_postcopy *pc)
{
	return __atomic_load_n(&pc->error, __ATOMIC_ACQUIRE);
}

uint64_t mig_postcopy_faults(struct mig_postcopy *pc)
{
	return __atomic_load_n(&pc->faults, __ATOMIC_RELAXED);
}

void mig_postcopy_stop(struct mig_postcopy *pc)
{
	if (!pc)
		return;
	if (pc->th_started) {
		uint64_t one = 1;
		if (write(pc->stop_fd, &one, sizeof(one)) < 0)
			abort();   /* an eventfd write of 1 cannot fail */
		pthread_join(pc->th, NULL);
	}
	/* Closing the uffd unregisters guest RAM and wakes any vCPU still
	 * blocked on a page: it retries and gets the memfd's page (a zero
	 * page for a hole, which is what the source had). */
	if (pc->uffd >= 0)
		close(pc->uffd);
	if (pc->stop_fd >= 0)
		close(pc->stop_fd);
	free(pc->stage);
	free(pc);
}
