/* memvisord internals: the VM manager (vmmgr.c) behind the API, its SQLite
 * state (state.c), VMM processes (vmm_proc.c), the watcher thread (watch.c),
 * host facts (host.c) and /metrics (metrics.c). */
#ifndef MEMVISOR_DAEMON_I_H
#define MEMVISOR_DAEMON_I_H

#include <limits.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdio.h>
#include "memvisor/api.h"
#include "memvisor/ctl.h"
#include "memvisor/guard.h"
#include "memvisor/mem.h"

/* guard_detect.c's per-VM state: the write-probe window and the pages of
 * other tenants' sensitive ranges this VM shares (sampled access). */
struct gwatch {
	uint64_t gpa;              /* this VM's page, fused with ... */
	uint64_t owner_key;        /* ... a page of this VM's sensitive range */
	uint64_t owner_gpa;
	struct mv_guard_sampled s;
	bool seen;                 /* still co-resident at the last check */
};

struct gdet {
	struct mv_guard_wprobe wp;
	uint64_t wp_victim, wp_gpa;
	bool flagged[MV_SIG__COUNT];   /* detected once: no repeat events */
	int pending;                   /* action + 1 to apply at the next tick, 0 none */
	uint64_t pending_event;
	uint64_t pending_victim;       /* fusion key of the event's victim, 0 unknown */
	uint64_t pending_more[3];      /* further victims (a deny-list page's other sharers) */
	struct gwatch watch[MV_CTL_SAMPLE_MAX];
	uint32_t nwatch;
	bool sampling;                 /* its VMM has pages trapped */
};

struct dvm {
	struct mv_vm_info info;      /* what the API shows; persistent part lives in SQLite */
	struct mv_mem_layout mem;    /* guest RAM fds the daemon owns; n = 0 when released */
	int ctl;                     /* control socket to the VMM, -1 when none */
	uint32_t seq;
	bool stop_requested;
	bool migrated_out;           /* its VMM ends because the VM lives elsewhere now */
	enum mv_vm_state state_before_migration;
	uint64_t minflt, majflt;     /* VMM page faults */
	uint64_t fkey;               /* its key in the fusion library (never reused) */
	bool fusion_pool_sent;       /* its current VMM holds the fusion pool fd */
	struct gdet det;             /* guard_detect.c */
	char dir[PATH_MAX];          /* <state>/vms/<id> */
};

struct daemon_cfg {
	const char *socket_path;
	const char *state_dir;
	const char *vmm_path;
	uint64_t mem_capacity;
	const char *migrate_listen;  /* HOST:PORT for incoming migrations, NULL = none */
	uint64_t fusion_rate;        /* pages/s the fusion scanner reads at most; 0 = off */
	uint32_t guard_colours;      /* guard's cache-colour check: LLC colours, 0 = off */
	uint32_t guard_row_shift;    /* guard's DRAM-row check: PFN >> shift, 0 = off */
	const char *image_cache;     /* host-wide shared cache dir; NULL: <state>/cache */
	bool insecure_registry;      /* plain http to non-loopback registries */
	const char *ctr_path;        /* memvisor-ctr binary */
	const char *crun_path;       /* crun binary */
};

struct ctrmgr;

struct vmmgr {
	struct daemon_cfg cfg;
	pthread_mutex_t lock;        /* guards everything below; held across control calls */
	sqlite3 *db;
	struct dvm **vms;
	size_t nvms, cap;
	pthread_t watcher;
	bool quit;
	pthread_cond_t quit_cv;
	uint64_t vmm_crashes;
	uint64_t handovers, handover_failures;
	int mig_listen;              /* TCP listener for incoming migrations, -1 when none */
	pthread_t mig_thread;
	char vmm_path_buf[MV_PATH_MAX];   /* cfg.vmm_path after an upgrade */
	uint64_t next_fkey;
	struct mv_fusion *fusion;    /* NULL when fusion is off */
	pthread_t fusion_thread, sample_thread;   /* fusion.c */
	bool fusion_running, fusion_quit;
	struct guard *guard;         /* guard.c: sensitive ranges, co-residency findings */
	struct ctrmgr *ctr;          /* ctrmgr.c: images, containers, the shared cache */
	struct detect *detect;       /* guard_detect.c: policy, events */
	struct guard_keep *keep;     /* guard_keep.c: pages moved by the guard, never fused */
};

/* state.c */
int state_open(struct vmmgr *m, struct mv_error **err);
/* Runs a module's CREATE TABLE statements; errors name what. */
int state_schema(sqlite3 *db, const char *sql, const char *what, struct mv_error **err);
void state_close(struct vmmgr *m);
int state_insert(struct vmmgr *m, const struct mv_vm_info *vm, struct mv_error **err);
int state_update(struct vmmgr *m, const struct mv_vm_info *vm);
int state_policy_save(struct vmmgr *m, const struct mv_guard_policy *p);
int state_policy_load(struct vmmgr *m, struct mv_guard_policy *p);
int state_delete(struct vmmgr *m, const char *id);
/* Loads every VM row; *out malloc'ed. */
int state_load(struct vmmgr *m, struct mv_vm_info **out, size_t *n, struct mv_error **err);

/* vmm_proc.c: VMM incarnation gen of vm has files <dir>/ctl.<gen>.sock, exit.<gen>. */
void vmm_path(const struct dvm *vm, uint32_t gen, const char *what, char *buf, size_t len);
/* Starts the VMM's monitor (which forks the VMM) in a new session; *pgid is
 * that session's process group, so vmm_kill_group() takes both. */
int vmm_spawn(const char *bin, struct dvm *vm, uint32_t gen, pid_t *pgid, struct mv_error **err);
/* child: the spawned monitor's pid (0 when re-adopting), to fail fast if it dies. */
int vmm_connect(struct dvm *vm, uint32_t gen, pid_t child, int timeout_ms,
		struct mv_ctl_hello *hello, int *sock, struct mv_error **err);
int vmm_call_on(int sock, uint32_t *seq, uint16_t type, const void *payload, uint32_t len,
		const int *fds, unsigned nfds, struct mv_ctl_msg *reply, int timeout_ms,
		struct mv_error **err);
/* The same on the VM's current VMM. */
int vmm_call(struct dvm *vm, uint16_t type, const void *payload, uint32_t len, const int *fds,
	     unsigned nfds, struct mv_ctl_msg *reply, int timeout_ms, struct mv_error **err);
/* Reads exit.<gen> into info's exit fields; waits up to wait_ms for it. */
bool vmm_read_exit(struct dvm *vm, uint32_t gen, int wait_ms);
void vmm_kill(pid_t pid);
void vmm_kill_group(pid_t pgid);

/* handover.c: moves a live VM to a new VMM process on this host, zero-copy. */
int handover_vm(struct vmmgr *m, struct dvm *vm, const char *bin, struct mv_handover_result *res);

/* migration.c: live migration between hosts (source and destination). */
int migration_start(struct vmmgr *m, struct dvm *vm, const struct mv_migrate_req *req,
		    struct mv_error **err);
/* Watcher, lock held: follows an outgoing migration from the VMM's STATUS. */
void migration_poll(struct vmmgr *m, struct dvm *vm, const struct mv_ctl_status *st);
int migration_listen_start(struct vmmgr *m, const char *addr, struct mv_error **err);
void migration_listen_stop(struct vmmgr *m);

/* vmmgr.c */
struct dvm *vmmgr_vm_new(struct vmmgr *m, const struct mv_vm_info *info);
void vmmgr_vm_free(struct vmmgr *m, struct dvm *vm);
int vmmgr_init(struct vmmgr *m, const struct daemon_cfg *cfg, struct mv_error **err);
void vmmgr_fini(struct vmmgr *m);
/* Lock held: the VM with that id (wins) or name; -ENOENT in *err when none. */
struct dvm *vmmgr_find(struct vmmgr *m, const char *ref, struct mv_error **err);
extern const struct mv_api_backend vmmgr_backend;
/* Sends SETUP with the guest RAM fds (and, for a hand-over, the vCPU states). */
int vmmgr_send_setup(struct dvm *vm, int sock, uint32_t *seq, const struct mv_wl_state *states,
		     bool start_paused, struct mv_error **err);
void vm_dir_clean(const char *dir);
/* Called with m->lock held: the VMM is gone; record how and release its RAM. */
void vmmgr_vm_exited(struct vmmgr *m, struct dvm *vm);
uint64_t vmmgr_used(struct vmmgr *m);
/* Lock held: STOP, or a kill when the VMM does not answer. */
int vmmgr_stop_vm(struct vmmgr *m, struct dvm *vm, struct mv_error **err);

/* watch.c */
int watch_start(struct vmmgr *m);
void watch_stop(struct vmmgr *m);
void watch_refresh(struct vmmgr *m, struct dvm *vm);

/* host.c */
uint64_t host_mem_total(void);
enum mv_mem_pages host_guest_ram_pages(void);
int host_random_id(char *out, size_t len);

/* fusion.c: the page-fusion thread driving src/guard's scanner. */
int fusion_start(struct vmmgr *m, struct mv_error **err);
void fusion_stop(struct vmmgr *m);
/* After vmmgr_fini(): frees the library (and the pool). */
void fusion_fini(struct vmmgr *m);
/* Lock held. Copies every fused page of vm back into its memfds (UNFUSE) and
 * detaches it: before a hand-over or an outgoing migration. */
int fusion_vm_unfuse(struct vmmgr *m, struct dvm *vm, struct mv_error **err);
/* Lock held. vm's VMM is gone: drop its references. */
void fusion_vm_forget(struct vmmgr *m, struct dvm *vm);
int fusion_info(struct vmmgr *m, struct mv_fusion_info *out);
void fusion_metrics(struct vmmgr *m, FILE *f);

/* guard.c: the side-channel guard. init after state_open (loads the ranges). */
int guard_init(struct vmmgr *m, struct mv_error **err);
void guard_fini(struct vmmgr *m);
/* Lock held: re-locks and re-resolves every range, checks co-residency. */
void guard_tick(struct vmmgr *m);
/* Adds the calling thread's CPU time since t0 (mv_thread_cpu_ns) to the
 * guard's account (under m->lock). */
void guard_charge(struct vmmgr *m, uint64_t t0);
/* Lock held: the key of another VM whose sensitive range holds a page fused
 * with gpa of VM key (0: none). */
uint64_t guard_sensitive_sharer(struct vmmgr *m, uint64_t key, uint64_t gpa);
/* Lock held: VM vm_id is deleted; its ranges go. */
void guard_vm_removed(struct vmmgr *m, const char *vm_id);
/* The "move" response: moves every sensitive range of victim to fresh frames
 * in its VMM (RELOCATE), then re-resolves and records the new frames.
 * *moved: pages moved; *us: the longest time the VMM held its vCPUs. */
int guard_move(struct vmmgr *m, struct dvm *victim, uint64_t *moved, uint64_t *us,
	       struct mv_error **err);
void guard_metrics(struct vmmgr *m, FILE *f);
/* API backend (take the lock). */
int guard_sensitive_add(void *ctx, const char *ref, uint64_t gpa, uint64_t len,
			struct mv_sensitive_range *out, struct mv_error **err);
int guard_sensitive_list(void *ctx, const char *ref, struct mv_sensitive_range **out, size_t *n,
			 struct mv_error **err);
int guard_sensitive_remove(void *ctx, const char *ref, uint64_t id, struct mv_error **err);
int guard_get(void *ctx, struct mv_guard_info *out, struct mv_error **err);

/* ctrmgr.c: containers (one memvisor-ctr shim each), with images.c (pulls,
 * the shared cache) and ctr_state.c (their SQLite rows). Own lock; never
 * takes the VM manager's. init after state_open; re-adopts running shims. */
int ctr_init(struct vmmgr *m, struct mv_error **err);
/* Stops the watcher, waits for pull workers; containers keep running. */
void ctr_fini(struct vmmgr *m);
void ctr_metrics(struct vmmgr *m, FILE *f);
int ctr_create(void *ctx, const struct mv_ctr_spec *spec, struct mv_ctr_info *out,
	       struct mv_error **err);
int ctr_list(void *ctx, struct mv_ctr_info **out, size_t *n, struct mv_error **err);
int ctr_get(void *ctx, const char *ref, struct mv_ctr_info *out, struct mv_error **err);
int ctr_stop(void *ctx, const char *ref, struct mv_ctr_info *out, struct mv_error **err);
int ctr_delete(void *ctx, const char *ref, bool force, struct mv_error **err);
int ctr_logs(void *ctx, const char *ref, uint64_t offset, uint32_t wait_ms,
	     struct mv_ctr_logs *out, struct mv_error **err);
int image_pull(void *ctx, const char *ref, struct mv_image_status *out, struct mv_error **err);
int image_list(void *ctx, struct mv_image_status **out, size_t *n, struct mv_error **err);
int image_get(void *ctx, const char *name, struct mv_image_status *out, struct mv_error **err);
int image_remove(void *ctx, const char *name, struct mv_error **err);
int cache_prepopulate(void *ctx, char *const *refs, size_t n, struct mv_cache_info *out,
		      struct mv_error **err);
int cache_get(void *ctx, struct mv_cache_info *out, struct mv_error **err);

/* guard_keep.c: guest ranges the guard moved, kept out of fusion in the
 * scanner and in every VMM (SQLite guard_kept). init after state_open. */
int guard_keep_init(struct vmmgr *m, struct mv_error **err);
void guard_keep_fini(struct vmmgr *m);
/* Lock held: records a moved range (durably) and tells the scanner. */
int guard_keep_add(struct vmmgr *m, struct dvm *vm, uint64_t gpa, uint64_t len,
		   struct mv_error **err);
/* Lock held: vm was just attached to fusion (a new VMM, a new scanner): its
 * kept ranges go to the scanner and to its VMM (GUARD op KEEP). */
void guard_keep_attached(struct vmmgr *m, struct dvm *vm);
/* Pages of vm_id kept out of fusion. */
uint64_t guard_keep_pages(struct vmmgr *m, const char *vm_id);
void guard_keep_vm_removed(struct vmmgr *m, const char *vm_id);
/* A VM's sensitive ranges / kept spans, for a migration's tenant block;
 * -E2BIG when more than cap. Lock held. */
int guard_spans(struct vmmgr *m, const char *vm_id, struct mv_migrate_span *out, uint32_t cap,
		uint32_t *n);
int guard_keep_spans(struct vmmgr *m, const char *vm_id, struct mv_migrate_span *out,
		     uint32_t cap, uint32_t *n);

/* guard_detect.c: detection of attackers and the policy's responses. */
void detect_init(struct vmmgr *m);
void detect_fini(struct vmmgr *m);
/* Lock held. n fresh cross-VM breaks of vm's fused pages at at_ms[]
 * (mv_now_ns() / 1e6; sorted here), sharing with victim_key, e.g. gpa. */
void detect_breaks(struct vmmgr *m, struct dvm *vm, uint64_t *at_ms, uint32_t n,
		   uint64_t victim_key, uint64_t gpa);
uint32_t detect_fresh_ms(struct vmmgr *m);
/* Lock held, from the guard's check: the pages other VMs share with sensitive
 * ranges (begin, one call per page, end). */
void detect_watch_begin(struct vmmgr *m);
void detect_watch(struct vmmgr *m, uint64_t other_key, uint64_t other_gpa, uint64_t owner_key,
		  uint64_t owner_gpa);
void detect_watch_end(struct vmmgr *m);
void detect_deny_check(struct vmmgr *m, const struct mv_guard_range *rs, size_t n);
/* Lock held, every fusion tick: ends a trapped window, arms the next. */
void detect_sample_tick(struct vmmgr *m);
/* Does vm share pages with another tenant's sensitive range, with detection
 * on and no write probe flagged yet? (Its breaks are then collected every
 * sampling tick.) */
bool detect_watched(struct vmmgr *m, const struct dvm *vm);
/* After the VMs are loaded: the recorded events and suspects (guard_record.c). */
void detect_restore(struct vmmgr *m);
/* guard_record.c: SQLite record of detections; lock held. */
int detect_record_init(struct vmmgr *m, struct mv_error **err);
/* Writes e (new or updated) and drops events more than keep ids older. */
void detect_record_event(struct vmmgr *m, const struct mv_guard_event_info *e, size_t keep);
/* Writes vm's flagged signals and fusion exclusion. */
void detect_record_suspect(struct vmmgr *m, const struct dvm *vm);
void detect_record_forget(struct vmmgr *m, const char *vm_id);
void detect_record_load(struct vmmgr *m, void (*add)(struct vmmgr *m,
						     const struct mv_guard_event_info *e));
/* Lock held: applies the queued responses. */
void detect_respond(struct vmmgr *m);
void detect_metrics(struct vmmgr *m, FILE *f);
/* API backend (take the lock). */
int detect_events(void *ctx, struct mv_guard_event_info **out, size_t *n, struct mv_error **err);
int detect_policy_get(void *ctx, struct mv_guard_policy *out, struct mv_error **err);
int detect_policy_set(void *ctx, const struct mv_guard_policy *in, struct mv_error **err);
/* metrics.c */
char *metrics_render(struct vmmgr *m);

#endif
