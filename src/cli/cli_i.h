/* Private interface of the memvisor CLI (src/cli/): the context every command
 * gets, the HTTP client over the daemon's Unix socket (client.c), output
 * helpers (output.c), the aligned table printer (table.c) and the command
 * entry points. Commands return a process exit status (enum mv_cli_exit);
 * everything else returns 0 or a negative errno. */
#ifndef MEMVISOR_CLI_I_H
#define MEMVISOR_CLI_I_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <jansson.h>
#include "memvisor/error.h"

#define MV_CLI_DEFAULT_SOCKET "/run/memvisor/memvisord.sock"
#define MV_CLI_SOCKET_ENV "MEMVISOR_SOCKET"

/* Per-request overall timeouts (seconds); connecting always gives up after 5 s. */
#define MV_CLI_TIMEOUT_SHORT 30
#define MV_CLI_TIMEOUT_LONG 120   /* create, stop, forced rm: VMM start/teardown */
#define MV_CLI_TIMEOUT_VERIFY 600 /* verify walks all of guest RAM */

enum mv_cli_exit { MV_CLI_OK = 0, MV_CLI_FAIL = 1, MV_CLI_USAGE = 2 };

/* Resolved once in main(); read-only afterwards. */
struct mv_cli {
	const char *socket;   /* never NULL */
	bool socket_explicit; /* from --socket or $MEMVISOR_SOCKET, not the default */
};

struct mv_cli_resp {
	long status;  /* HTTP status, 0 when no answer arrived */
	char *body;   /* NUL-terminated, malloc'ed (may be empty) */
	size_t len;
	json_t *json; /* parsed body, set by mv_cli_call when want_json */
};

/* Sends one request to the daemon; body (may be NULL) is sent as JSON.
 * Transport failures (no daemon, timeout, truncated answer) are printed to
 * stderr and returned as -errno. Any HTTP status counts as success here.
 * The caller frees *out with mv_cli_resp_free() in every case. */
int mv_cli_request(const struct mv_cli *cli, const char *method, const char *path,
		   const json_t *body, long timeout_s, struct mv_cli_resp *out) MV_MUST_CHECK;
/* mv_cli_request, then: a non-2xx status prints the API error and returns
 * -EREMOTEIO (out->status tells which); with want_json a 2xx body must be a
 * JSON object (else printed, -EPROTO) and lands in out->json. */
int mv_cli_call(const struct mv_cli *cli, const char *method, const char *path,
		const json_t *body, long timeout_s, bool want_json,
		struct mv_cli_resp *out) MV_MUST_CHECK;
void mv_cli_resp_free(struct mv_cli_resp *r);
/* GET path (JSON object answer). Returns -1 with the answer in *r (the
 * caller prints and frees it); else, the answer printed as JSON when json,
 * the exit status with *r already freed. */
int mv_cli_get_or_print(const struct mv_cli *cli, const char *path, bool json,
			struct mv_cli_resp *r);
/* "/v1/vms/<escaped ref><suffix>", malloc'ed; NULL only on OOM. */
char *mv_cli_vm_path(const char *ref, const char *suffix);

/* output.c */
void mv_cli_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void mv_cli_hint(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Prints "memvisor: <cmd>: <msg>" and a pointer to --help; returns MV_CLI_USAGE. */
int mv_cli_usage_err(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Reports a getopt failure (unknown option / missing argument); returns MV_CLI_USAGE. */
int mv_cli_getopt_err(const char *cmd, int c, char *const argv[]);
int mv_cli_print_json(const json_t *j);
/* Lenient accessors: a missing or mistyped member yields dflt / false. */
const char *mv_cli_jstr(const json_t *o, const char *key, const char *dflt);
bool mv_cli_jint(const json_t *o, const char *key, long long *out);
bool mv_cli_jnum(const json_t *o, const char *key, double *out);
/* A size member (integer bytes, or a string as given) as "512.0 MiB" into buf. */
const char *mv_cli_jsize(const json_t *o, const char *key, char *buf, size_t len);
/* Prints "label:" padded to width, then the formatted value. */
void mv_cli_kv(int width, const char *label, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* opts.c: parses --help (prints usage) and --json (sets *json; json NULL
 * rejects it). Returns -1 to go on with the operands from argv[optind], else
 * the exit status. */
int mv_cli_json_opts(const char *cmd, const char *usage, int argc, char **argv, bool *json);
/* After option parsing: argv[optind] must be sub and last (subs lists the
 * command's subcommands for the error). -1 to go on, else MV_CLI_USAGE. */
int mv_cli_only_sub(const char *cmd, const char *sub, const char *subs, int argc, char **argv);

/* table.c */
struct mv_table;
/* headers: ncols column titles; right: per column, true = right-aligned. */
struct mv_table *mv_table_new(size_t ncols, const char *const *headers, const bool *right);
/* Copies ncols cells (NULL prints "-"). Returns 0 or -ENOMEM. */
int mv_table_add(struct mv_table *t, const char *const *cells) MV_MUST_CHECK;
void mv_table_print(const struct mv_table *t, FILE *f);
void mv_table_free(struct mv_table *t);
/* A table of arr's elements, a row each: row fills cells (NULL prints "-"),
 * formatting into buf as needed. Prints it; returns an exit status. */
#define MV_TABLE_MAX_COLS 12
#define MV_TABLE_CELL 48
typedef void (*mv_table_row_fn)(const json_t *el, const char **cells,
				char (*buf)[MV_TABLE_CELL]);
int mv_table_print_json(const json_t *arr, size_t ncols, const char *const *headers,
			const bool *right, mv_table_row_fn row);
/* v in decimal into cell (MV_TABLE_CELL bytes); returns cell. */
const char *mv_table_num(char *cell, long long v);

/* Commands: argv[0] is the command's own name. */
int mv_cli_cmd_vm(const struct mv_cli *cli, int argc, char **argv);
int mv_cli_cmd_vm_create(const struct mv_cli *cli, int argc, char **argv);
int mv_cli_cmd_host(const struct mv_cli *cli, int argc, char **argv);
int mv_cli_cmd_fusion(const struct mv_cli *cli, int argc, char **argv);
int mv_cli_cmd_guard(const struct mv_cli *cli, int argc, char **argv);
/* cmd_guard_policy.c: `guard events`, `guard policy [set]` (sub names which). */
int mv_cli_cmd_guard_detect(const struct mv_cli *cli, const char *sub, int argc, char **argv);
int mv_cli_cmd_vm_sensitive(const struct mv_cli *cli, int argc, char **argv);
int mv_cli_cmd_metrics(const struct mv_cli *cli, int argc, char **argv);
int mv_cli_cmd_daemon(const struct mv_cli *cli, int argc, char **argv);
int mv_cli_cmd_vm_migrate(const struct mv_cli *cli, int argc, char **argv);
int mv_cli_cmd_upgrade(const struct mv_cli *cli, int argc, char **argv);
int mv_cli_cmd_image(const struct mv_cli *cli, int argc, char **argv);
int mv_cli_cmd_cache(const struct mv_cli *cli, int argc, char **argv);
int mv_cli_cmd_container(const struct mv_cli *cli, int argc, char **argv);
/* cmd_image.c: one line of a progress object (phase, layer, layers,
 * done_bytes, total_bytes) as a bar on stderr, redrawn in place; only on a tty. */
void mv_cli_progress(const char *label, const json_t *p, bool tty);

#endif
