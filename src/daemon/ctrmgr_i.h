/* memvisord's container side, shared by ctrmgr.c (containers and their
 * shims), images.c (pulls and the shared cache) and ctr_state.c (SQLite). */
#ifndef MEMVISOR_CTRMGR_I_H
#define MEMVISOR_CTRMGR_I_H

#include "memvisor/image.h"
#include "daemon_i.h"

struct dimage {
	struct mv_image_status st;   /* st.name: the reference as asked, normalised */
	char canonical[600];         /* "registry/repo@sha256:..." once pulled */
	bool pulling;
};

struct dctr {
	struct mv_ctr_info info;
	char canonical[600];         /* image as the mapping database names it */
	char dir[PATH_MAX];          /* <state>/containers/<id> */
	bool stop_requested;
};

struct ctrmgr {
	pthread_mutex_t lock;        /* guards everything below; never held across a pull */
	pthread_cond_t cv;           /* broadcast when an image or container changes */
	sqlite3 *db;                 /* the VM manager's connection (FULLMUTEX) */
	char store_dir[PATH_MAX], mapping_db[PATH_MAX], cache_dir[PATH_MAX], ctr_root[PATH_MAX];
	char ctr_bin[PATH_MAX], crun[PATH_MAX];
	bool insecure;
	struct dimage **images;
	size_t nimages;
	struct dctr **ctrs;
	size_t nctrs;
	unsigned workers;            /* pull / prepopulate threads running */
	bool quit;
	pthread_t watcher;
	bool watcher_running;
	struct mv_cache_info job;    /* the last prepopulate job */
	struct mv_ctr_fs_stats retired;   /* counters of removed containers */
	uint64_t pull_registry_bytes;     /* fetched by pulls and prepopulates */
};

/* images.c. Lock held: the image named (normalised) name, NULL if none. */
struct dimage *images_find(struct ctrmgr *c, const char *name);
/* "registry/repo:tag" or "registry/repo@digest" of ref (-EINVAL naming "ref"/field). */
int images_normalise(const char *ref, char *out, size_t len, const char *field,
		     struct mv_error **err);
/* Pulls ref now on the calling thread (no lock held) unless it is pulled:
 * for container creation. Fills canonical. */
int images_ensure(struct ctrmgr *c, const char *name, char *canonical, size_t len,
		  struct mv_error **err);
void images_paths(struct ctrmgr *c, struct mv_image_paths *p);

/* ctrmgr.c: every container's fs counters (from its shim's stats.json) plus
 * those of removed containers. Takes the lock. */
void ctr_fs_sum(struct ctrmgr *c, struct mv_ctr_fs_stats *sum);

/* ctr_state.c */
int ctr_state_open(struct ctrmgr *c, struct mv_error **err);
void ctr_state_put_image(struct ctrmgr *c, const struct dimage *im);
void ctr_state_delete_image(struct ctrmgr *c, const char *name);
void ctr_state_put_ctr(struct ctrmgr *c, const struct dctr *ct);
void ctr_state_delete_ctr(struct ctrmgr *c, const char *id);
/* Loads every row into c (lock not needed: before the API starts). */
int ctr_state_load(struct ctrmgr *c, struct mv_error **err);

#endif
