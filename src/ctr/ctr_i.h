/* memvisor-ctr internals: the per-container shim. spec.c (a small library,
 * so tests/fuzz/ctr_image_config.c links it too) reads the container's
 * ctr.json (written by memvisord) and builds the OCI runtime bundle's
 * config.json from it and the image's config; main.c mounts the root, runs
 * crun and records how it ended. */
#ifndef MEMVISOR_CTR_I_H
#define MEMVISOR_CTR_I_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include "memvisor/error.h"

#define CTR_ARGS_MAX 256
#define CTR_ENV_MAX 256

/* ctr.json: everything the shim needs, validated field by field. */
struct ctr_spec {
	char id[64];            /* crun container id: "mv-<hex>" */
	char image[600];        /* image name in the mapping database */
	char mapping_db[PATH_MAX], store_dir[PATH_MAX], cache_dir[PATH_MAX];   /* cache "" = none */
	char registry_url[300], repo[256];
	char crun[PATH_MAX];
	bool insecure;
	bool net_none;          /* own (empty) network namespace instead of the host's */
	unsigned stop_grace_ms; /* SIGTERM -> SIGKILL */
	char **cmd, **env;      /* NULL-terminated; cmd empty = the image's */
	size_t ncmd, nenv;
};

/* Reads and validates ctr.json (parse: from a buffer, for tests and fuzzing). */
int mv_ctr_spec_load(const char *path, struct ctr_spec *out, struct mv_error **err) MV_MUST_CHECK;
int mv_ctr_spec_parse(const char *text, size_t len, struct ctr_spec *out,
		      struct mv_error **err) MV_MUST_CHECK;
void mv_ctr_spec_free(struct ctr_spec *s);
/* The OCI runtime config (process from cmd or the image's Entrypoint+Cmd,
 * Env merged, WorkingDir, User) for a root at rootfs; *json malloc'ed. The
 * image config comes from a registry: every field is validated, a bad one is
 * -EBADMSG naming it. A User name is looked up in rootfs/etc/passwd, resolved
 * inside rootfs (a symlink cannot point the lookup at a host file). */
int mv_ctr_bundle_config(const struct ctr_spec *s, const char *image_config, size_t len,
			 const char *rootfs, const char *hostname, char **json,
			 struct mv_error **err) MV_MUST_CHECK;

#endif
