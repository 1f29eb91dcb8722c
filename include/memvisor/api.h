/* The daemon's HTTP/1.1 + JSON API on a Unix socket (/v1): routing, strict
 * request decoding, response encoding, error mapping. memvisord plugs its VM
 * manager in through struct mv_api_backend; the api module never reaches into
 * the daemon. Spec: docs/api/openapi.yaml. */
#ifndef MEMVISOR_API_H
#define MEMVISOR_API_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "memvisor/error.h"
#include "memvisor/guard.h"
#include "memvisor/mem.h"
#include "memvisor/vm.h"

#define MV_API_MAX_BODY (64 * 1024)
#define MV_NAME_MAX 63
#define MV_ID_LEN 16   /* hex chars of a VM id */

enum mv_vm_state {
	MV_VM_CREATING, MV_VM_RUNNING, MV_VM_PAUSED, MV_VM_STOPPED, MV_VM_CRASHED,
	MV_VM_MIGRATING,   /* running here while its memory streams to another host */
	MV_VM_INCOMING,    /* arriving from another host */
	MV_VM_MIGRATED,    /* now runs on another host; holds nothing here */
	MV_VM__COUNT
};
/* "creating", "running", ...; "unknown" out of range. Static string. */
const char *mv_vm_state_name(enum mv_vm_state s);

/* POST /v1/vms body, decoded and validated field by field. */
struct mv_vm_spec {
	char name[MV_NAME_MAX + 1];   /* [a-z0-9][a-z0-9_.-]*, 1..63 chars */
	uint64_t memory;              /* bytes, page aligned, > 0 */
	uint32_t vcpus;               /* 1..MV_MAX_VCPUS, default 1 */
	enum mv_mem_backing backing;  /* "auto" (default) | "4k" | "hugetlb" */
	struct mv_wl_params workload; /* kind required; others default per kind */
	bool fusion;                  /* opt in to page fusion (default false) */
};

/* The last (or current) live migration of a VM to another host. */
struct mv_migration_info {
	bool active;                  /* false: never migrated (nothing to show) */
	char to[128];                 /* destination host:port ("" on the destination) */
	char from[128];               /* source address, on the destination */
	char phase[16];               /* setup, precopy, stopcopy, postcopy, done, failed */
	uint32_t pass;
	uint32_t throttle_pct;
	uint64_t bytes_sent;
	uint64_t pages_sent;
	uint64_t pages_remaining;
	uint64_t pages_requested;     /* post-copy: pages the destination faulted on */
	uint64_t dirty_rate;          /* pages/s */
	uint64_t bandwidth;           /* bytes/s */
	uint64_t downtime_us;
	uint64_t total_us;
	char error[256];              /* why it failed; the VM runs on where it was */
};

/* Everything the API shows about one VM. */
struct mv_vm_info {
	char id[MV_ID_LEN + 1];
	char name[MV_NAME_MAX + 1];
	enum mv_vm_state state;
	uint64_t memory;
	uint32_t vcpus;
	enum mv_mem_backing backing;
	struct mv_wl_params workload;
	int32_t pid;                  /* VMM pid, 0 when none */
	uint32_t vmm_gen;             /* VMM incarnation: +1 on every hand-over */
	uint64_t created_at;          /* unix seconds */
	/* exit of the VMM when stopped/crashed: */
	int32_t exit_code;            /* -1 when killed by a signal or unknown */
	int32_t exit_signal;          /* 0 when none */
	char exit_reason[128];        /* human: "killed by signal 9 (Killed)" */
	/* live stats from the VMM (0 when not running): */
	uint64_t ops_done;
	uint64_t resident_bytes;      /* guest pages actually backed */
	uint64_t dirty_pages_total;
	double dirty_rate;            /* pages/s over the last sampling interval */
	char dirty_backend[16];
	struct mv_migration_info migration;
	bool fusion;                  /* opted in to page fusion */
	uint64_t fused_pages;         /* guest pages now mapped to fused pool pages */
	uint64_t cow_breaks;          /* fused pages this VM's writes un-shared */
	uint64_t wl_aux[4];           /* workload results (see the workload kinds) */
	uint32_t throttle_pct;        /* vCPUs held back this share of the time */
	bool fusion_excluded;         /* the guard took it out of page fusion */
};

/* GET /v1/fusion: the page-fusion scanner's figures. */
struct mv_fusion_info {
	bool enabled;                 /* the daemon runs a scanner (--fusion-rate > 0) */
	uint64_t rate;                /* pages scanned per second at most */
	uint64_t shared;              /* pool pages in use */
	uint64_t sharing;             /* guest pages mapped to them */
	uint64_t unshared;            /* unique pages in the last full scan */
	uint64_t full_scans;
	uint64_t pages_scanned;
	uint64_t merges, misses, cow_breaks, unfused;
	uint64_t saved_bytes;         /* (sharing - shared) pages */
	uint32_t vms;                 /* VMs being scanned */
};

/* A guest range of a VM its tenant marked sensitive, and the host frames
 * behind it (read from the VMM's /proc/PID/pagemap while it runs). */
#define MV_SENSITIVE_RUNS_MAX 64
struct mv_sensitive_run {
	uint64_t gpa;
	uint64_t pfn;                 /* first frame of a run of contiguous frames */
	uint64_t pages;
};

struct mv_sensitive_range {
	uint64_t id;
	char vm[MV_NAME_MAX + 1];
	uint64_t gpa, len;            /* page aligned, inside one RAM region */
	uint64_t created_at;
	bool locked;                  /* mlocked in the VMM at the last check */
	uint64_t resident_pages;      /* pages with a frame at the last check */
	uint32_t runs_total;          /* protected physical ranges (runs of frames) */
	uint32_t nruns;               /* the first of them shown in runs[] */
	struct mv_sensitive_run runs[MV_SENSITIVE_RUNS_MAX];
};

/* GET /v1/guard/events: one detection of a suspected side-channel attacker. */
struct mv_guard_event_info {
	uint64_t id;
	uint64_t time_ms;             /* unix ms */
	char suspect[MV_NAME_MAX + 1];
	char victim[MV_NAME_MAX + 1]; /* "" when unknown */
	char signal[24];              /* write_probe, sampled_access, deny_hash */
	char action[16];              /* the policy's response */
	char outcome[128];            /* "ok" or why the response failed */
	char rule[64];                /* deny_hash: the entry's name */
	uint64_t evidence;            /* write_probe: fresh cross-VM breaks in the window;
				       * sampled_access: trapped windows touched; deny_hash: pages */
	uint64_t evidence_of;         /* write_probe: the window (ms); sampled_access: windows */
	uint64_t gpa;                 /* one page of the suspect involved */
	double latency_ms;            /* from the first signal to the detection */
};

/* GET /v1/guard: one co-residency finding (another VM's data within a range). */
struct mv_guard_finding_info {
	uint64_t range_id;
	char vm[MV_NAME_MAX + 1];       /* the range's VM */
	char other_vm[MV_NAME_MAX + 1]; /* the co-resident VM */
	char kind[8];                   /* fused, frame, colour, row */
	uint64_t pages;                 /* the other VM's pages found that way */
	uint64_t gpa, pfn, other_gpa, other_pfn;   /* one example */
};

struct mv_guard_info {
	uint32_t colours;             /* cache-colour check: LLC colours, 0 = off */
	uint32_t row_shift;           /* DRAM-row check: PFN >> row_shift, 0 = off */
	uint32_t llc_colours;         /* what this host's LLC has */
	uint64_t checks;              /* co-residency checks run */
	uint64_t cpu_ns;              /* daemon CPU time spent on checks, sampling, responses */
	uint64_t ranges;
	uint64_t protected_pages;     /* resident pages in all ranges */
	uint64_t events;              /* findings that newly appeared, in total */
	size_t nfindings;
	struct mv_guard_finding_info *findings;   /* malloc'ed, the caller frees */
};

struct mv_host_info {
	char version[32];
	char hostname[64];
	char state_dir[256];
	uint64_t memory_capacity;     /* bytes of guest RAM this host admits */
	uint64_t memory_used;         /* sum of admitted VMs' memory */
	uint64_t hugepages_free;      /* 2 MiB hugetlb pages free and not reserved */
	char guest_ram_pages[8];      /* "hugetlb", "thp" or "4k": what a new VM gets */
	char dirty_backend[16];       /* what AUTO picks on this kernel */
	uint32_t vms;
};

struct mv_verify_result {
	bool ok;
	uint64_t ops_done;
	uint64_t elapsed_us;
	char message[256];            /* why it failed, "" when ok */
};

enum mv_vm_action { MV_VM_PAUSE, MV_VM_RESUME, MV_VM_STOP };

#define MV_PATH_MAX 256

/* POST /v1/vms/{vm}/migrate body: exactly one of local and to. */
struct mv_migrate_req {
	bool local;                  /* hand over to a new VMM process on this host (zero-copy) */
	char vmm[MV_PATH_MAX];       /* local: the new VMM binary; "" = the daemon's current one */
	char to[128];                /* remote: the destination daemon's migration address host:port */
	uint32_t downtime_ms;        /* remote: stop-copy target, 0 = default (300) */
	bool postcopy;               /* remote: resume at the destination early, pull pages */
	bool compress;               /* remote: zstd pages */
	uint64_t max_bandwidth;      /* remote: bytes/s cap, 0 = none */
};

/* Outcome of moving one VM to a new VMM process on this host. */
struct mv_handover_result {
	char vm[MV_NAME_MAX + 1];
	bool ok;
	int32_t old_pid;
	int32_t new_pid;             /* 0 when the new VMM never came up */
	uint64_t downtime_us;        /* old vCPUs paused -> new vCPUs running */
	uint64_t total_us;
	char vmm[MV_PATH_MAX];
	char message[256];           /* why it failed and where the VM is, "" when ok */
};

/* ---- container images, containers, the shared cache (routes_ctr.c) ---- */

#define MV_IMAGE_NAME_MAX 511   /* "host[:port]/repo[:tag|@digest]" */
#define MV_CTR_ARGS_MAX 256
#define MV_CTR_ARG_MAX 4096

/* An image this host pulled or is pulling: GET /v1/images/{name}. */
struct mv_image_status {
	char name[MV_IMAGE_NAME_MAX + 1]; /* canonical reference */
	char state[16];               /* pulling, ready, failed */
	char phase[16];               /* manifest, index, fetch, done ("" when queued) */
	uint32_t layer, layers;
	uint64_t done_bytes, total_bytes;
	char manifest[80];            /* "sha256:..." once known */
	uint64_t layers_bytes;        /* compressed, as in the manifest */
	uint64_t registry_bytes;      /* fetched by its pulls */
	uint64_t pulled_at;           /* unix seconds of the last successful pull */
	uint32_t containers;          /* containers of it on this host */
	char error[256];              /* why the pull failed */
};

/* POST /v1/containers body. cmd/env are malloc'ed vectors (mv_api_ctr_spec_free). */
struct mv_ctr_spec {
	char name[MV_NAME_MAX + 1];   /* "" = generated */
	char image[MV_IMAGE_NAME_MAX + 1];
	char **cmd;                   /* empty: the image's Entrypoint + Cmd */
	size_t ncmd;
	char **env;                   /* KEY=VALUE */
	size_t nenv;
};
void mv_api_ctr_spec_free(struct mv_ctr_spec *s);

enum mv_ctr_state { MV_CTR_CREATED, MV_CTR_RUNNING, MV_CTR_EXITED, MV_CTR__COUNT };
const char *mv_ctr_state_name(enum mv_ctr_state s);

/* A container's root filesystem counters, from its shim's stats.json. */
struct mv_ctr_fs_stats {
	uint64_t registry_bytes, registry_requests, files_fetched, chunk_reads, copy_ups;
	uint64_t cache_hits, cache_misses, cache_hit_bytes;
};

struct mv_ctr_info {
	char id[MV_ID_LEN + 1];
	char name[MV_NAME_MAX + 1];
	char image[MV_IMAGE_NAME_MAX + 1];
	char command[256];            /* for display: args joined by spaces, cut */
	enum mv_ctr_state state;
	int32_t pid;                  /* the container's init (host pid), 0 when none */
	int32_t shim_pid;             /* its memvisor-ctr, 0 when gone */
	uint64_t created_at, finished_at;
	int32_t exit_code;            /* exited: as crun reports it (-1: unknown) */
	int32_t exit_signal;          /* exited: the shim was killed by it, 0 when none */
	char exit_reason[128];
	struct mv_ctr_fs_stats fs;
};

/* GET /v1/containers/{name}/logs: bytes of the log from offset. */
struct mv_ctr_logs {
	char *data;                   /* malloc'ed, len bytes (may hold any bytes) */
	size_t len;
	uint64_t offset, next_offset, size;
	bool exited;                  /* the container has ended: nothing more will come */
};

/* GET /v1/cache: the host-wide prepopulated cache and the last prepopulate job. */
struct mv_cache_info {
	char dir[MV_PATH_MAX];
	uint64_t files, bytes;        /* in the cache directory now */
	bool job;                     /* a prepopulate job was started */
	char state[16];               /* running, done, failed */
	uint32_t image_index, images; /* image being worked on, of how many */
	char current[MV_IMAGE_NAME_MAX + 1];
	char phase[16];
	uint32_t layer, layers;
	uint64_t done_bytes, total_bytes;
	uint64_t job_files, job_bytes, job_registry_bytes;
	char error[256];
	uint64_t hits, misses, hit_bytes;   /* summed over this host's containers */
};

/* Implemented by memvisord. Every call returns 0 or -errno with *err set;
 * errors map to HTTP as: -EINVAL 400, -ENOENT 404, -EEXIST/-EBUSY 409,
 * -ENOSPC 422 (does not fit), -E2BIG 413, unreachable peer (-EHOSTUNREACH,
 * -ECONNREFUSED, -ETIMEDOUT, -ENETUNREACH) 503, others 500. `ref` is an id or a name.
 * Calls may come from the API's thread concurrently with the daemon's own. */
struct mv_api_backend {
	int (*vm_create)(void *ctx, const struct mv_vm_spec *spec, struct mv_vm_info *out,
			 struct mv_error **err);
	/* *out is malloc'ed, the caller frees it. */
	int (*vm_list)(void *ctx, struct mv_vm_info **out, size_t *n, struct mv_error **err);
	int (*vm_get)(void *ctx, const char *ref, struct mv_vm_info *out, struct mv_error **err);
	int (*vm_action)(void *ctx, const char *ref, enum mv_vm_action a, struct mv_vm_info *out,
			 struct mv_error **err);
	int (*vm_verify)(void *ctx, const char *ref, struct mv_verify_result *out,
			 struct mv_error **err);
	/* force: stop a running VM first; else -EBUSY while it runs. */
	int (*vm_delete)(void *ctx, const char *ref, bool force, struct mv_error **err);
	int (*host_get)(void *ctx, struct mv_host_info *out, struct mv_error **err);
	/* local: moves the VM to a new VMM process (a failed hand-over leaves it
	 * on its old VMM and returns -EIO with the reason), filling *out.
	 * remote: starts a live migration and returns at once with *vm showing
	 * state migrating; progress and outcome show in the VM's migration. */
	int (*vm_migrate)(void *ctx, const char *ref, const struct mv_migrate_req *req,
			  struct mv_handover_result *out, struct mv_vm_info *vm,
			  struct mv_error **err);
	/* Moves every live VM, one at a time, to a new VMM binary; per-VM results
	 * in *out (malloc'ed). Fails as a whole only for a bad binary path. */
	int (*upgrade)(void *ctx, const char *vmm_path, struct mv_handover_result **out, size_t *n,
		       struct mv_error **err);
	int (*fusion_get)(void *ctx, struct mv_fusion_info *out, struct mv_error **err);
	/* Sensitive ranges of VM ref: add one (resolving and locking its frames
	 * when the VM runs), list them (*out malloc'ed), remove one (-ENOENT). */
	int (*sensitive_add)(void *ctx, const char *ref, uint64_t gpa, uint64_t len,
			     struct mv_sensitive_range *out, struct mv_error **err);
	int (*sensitive_list)(void *ctx, const char *ref, struct mv_sensitive_range **out,
			      size_t *n, struct mv_error **err);
	int (*sensitive_remove)(void *ctx, const char *ref, uint64_t id, struct mv_error **err);
	/* Runs a co-residency check now and reports it (out->findings malloc'ed). */
	int (*guard_get)(void *ctx, struct mv_guard_info *out, struct mv_error **err);
	/* Images: start a pull on a worker (returns at once, *out queued or
	 * already pulled), list (*out malloc'ed), show, remove (-EBUSY while a
	 * container uses it). */
	int (*image_pull)(void *ctx, const char *ref, struct mv_image_status *out,
			  struct mv_error **err);
	int (*image_list)(void *ctx, struct mv_image_status **out, size_t *n, struct mv_error **err);
	int (*image_get)(void *ctx, const char *name, struct mv_image_status *out,
			 struct mv_error **err);
	int (*image_remove)(void *ctx, const char *name, struct mv_error **err);
	/* Starts filling the shared cache with refs on a worker (-EBUSY while one runs). */
	int (*cache_prepopulate)(void *ctx, char *const *refs, size_t n, struct mv_cache_info *out,
				 struct mv_error **err);
	int (*cache_get)(void *ctx, struct mv_cache_info *out, struct mv_error **err);
	/* Containers: create and start (pulling the image first if needed). */
	int (*ctr_create)(void *ctx, const struct mv_ctr_spec *spec, struct mv_ctr_info *out,
			  struct mv_error **err);
	int (*ctr_list)(void *ctx, struct mv_ctr_info **out, size_t *n, struct mv_error **err);
	int (*ctr_get)(void *ctx, const char *ref, struct mv_ctr_info *out, struct mv_error **err);
	int (*ctr_stop)(void *ctx, const char *ref, struct mv_ctr_info *out, struct mv_error **err);
	/* force: stop a running container first; else -EBUSY while it runs. */
	int (*ctr_delete)(void *ctx, const char *ref, bool force, struct mv_error **err);
	/* Log bytes from offset; waits up to wait_ms for more while it runs. */
	int (*ctr_logs)(void *ctx, const char *ref, uint64_t offset, uint32_t wait_ms,
			struct mv_ctr_logs *out, struct mv_error **err);
	/* The detections kept (the latest 256); *out malloc'ed. */
	int (*guard_events)(void *ctx, struct mv_guard_event_info **out, size_t *n,
			    struct mv_error **err);
	int (*guard_policy_get)(void *ctx, struct mv_guard_policy *out, struct mv_error **err);
	/* Validates (mv_guard_policy_check) and applies. */
	int (*guard_policy_set)(void *ctx, const struct mv_guard_policy *in, struct mv_error **err);
	/* Prometheus text exposition; *text malloc'ed, caller frees. */
	int (*metrics)(void *ctx, char **text, struct mv_error **err);
};

struct mv_api_server;

/* Listens on a Unix socket at sock_path (mode 0660) and serves requests on the
 * API's own threads (one per connection, at most 64) until stopped. be and ctx
 * must outlive the server; backend callbacks may run concurrently. A socket
 * file nobody listens on is replaced; -EADDRINUSE when a live server answers
 * there, -EEXIST when the path is not a socket, -ENAMETOOLONG past sun_path. */
int mv_api_server_start(const char *sock_path, const struct mv_api_backend *be, void *ctx,
			struct mv_api_server **out, struct mv_error **err) MV_MUST_CHECK;
/* Waits for in-flight requests, closes the socket and removes its file (if it
 * is still the one we created); frees s. NULL is a no-op. */
void mv_api_server_stop(struct mv_api_server *s);
/* Calls fn for every method and path template the router serves
 * ("POST", "/v1/vms/{vm}/pause"): the test that keeps the spec honest. */
void mv_api_routes_each(void (*fn)(const char *method, const char *path, void *arg), void *arg);

/* Codecs, exposed for the CLI, the tests and the fuzz targets. */
/* Decodes a POST /v1/vms body: rejects malformed JSON (err->field "body", the
 * message gives line and column), duplicate keys, unknown fields, wrong types,
 * out-of-range values with -EINVAL; errors name the field ("workload.rate").
 * Fills defaults (vcpus 1, backing auto, seed 1, pattern random, put_pct 70,
 * hot_pct 90, wss per kind). *out is written only on success. */
int mv_api_decode_vm_spec(const char *body, size_t len, struct mv_vm_spec *out,
			  struct mv_error **err) MV_MUST_CHECK;
/* POST /v1/vms/{vm}/migrate and POST /v1/upgrade bodies (strict, like above). */
int mv_api_decode_migrate(const char *body, size_t len, struct mv_migrate_req *out,
			  struct mv_error **err) MV_MUST_CHECK;
int mv_api_decode_upgrade(const char *body, size_t len, char *vmm, size_t cap,
			  struct mv_error **err) MV_MUST_CHECK;
char *mv_api_encode_handover(const struct mv_handover_result *r);
/* POST /v1/vms/{vm}/sensitive body {"gpa": N, "len": N}: integers, page
 * aligned, len > 0, no wrap (strict, like above; errors name the field). */
int mv_api_decode_sensitive(const char *body, size_t len, uint64_t *gpa, uint64_t *size,
			    struct mv_error **err) MV_MUST_CHECK;
char *mv_api_encode_sensitive(const struct mv_sensitive_range *r);
char *mv_api_encode_sensitive_list(const struct mv_sensitive_range *r, size_t n);
char *mv_api_encode_guard(const struct mv_guard_info *g);
/* POST /v1/images {"ref"}, POST /v1/containers, POST /v1/cache/prepopulate
 * {"images": [...]} bodies (strict, errors name the field). refs: malloc'ed
 * vector of *n malloc'ed strings. */
int mv_api_decode_image_pull(const char *body, size_t len, char *ref, size_t cap,
			     struct mv_error **err) MV_MUST_CHECK;
int mv_api_decode_ctr_spec(const char *body, size_t len, struct mv_ctr_spec *out,
			   struct mv_error **err) MV_MUST_CHECK;
int mv_api_decode_prepopulate(const char *body, size_t len, char ***refs, size_t *n,
			      struct mv_error **err) MV_MUST_CHECK;
/* An image reference as the API accepts it: 1..511 printable ASCII, no spaces. */
bool mv_api_image_name_valid(const char *s);
char *mv_api_encode_image(const struct mv_image_status *im);
char *mv_api_encode_ctr(const struct mv_ctr_info *c);
char *mv_api_encode_cache(const struct mv_cache_info *c);
/* POST /v1/guard/policy: overlays the fields present on *p (the current
 * policy), validated; *p is untouched on error. */
int mv_api_decode_guard_policy(const char *body, size_t len, struct mv_guard_policy *p,
			       struct mv_error **err) MV_MUST_CHECK;
char *mv_api_encode_guard_policy(const struct mv_guard_policy *p);
char *mv_api_encode_guard_events(const struct mv_guard_event_info *e, size_t n);
/* Validates a VM name: ^[a-z0-9][a-z0-9_.-]{0,62}$ (ids are valid names too). */
bool mv_api_name_valid(const char *name);
/* JSON text of a VM / host / verify result / error; malloc'ed, the caller
 * frees it with free(); NULL only when out of memory. encode_error takes the
 * HTTP status, an optional error (NULL: message from code) and the negative
 * errno shown as "code" (0: e->code). */
char *mv_api_encode_vm(const struct mv_vm_info *vm);
char *mv_api_encode_host(const struct mv_host_info *h);
char *mv_api_encode_verify(const struct mv_verify_result *r);
char *mv_api_encode_fusion(const struct mv_fusion_info *f);
char *mv_api_encode_error(int http_status, const struct mv_error *e, int code);
/* HTTP status of a backend/codec result: 0 200, -EINVAL 400, -ENOENT 404,
 * -EEXIST/-EBUSY 409, -E2BIG 413, -ENOSPC 422, anything else 500. */
int mv_api_http_status(int code);

#endif
