/* Strict decoders of POST /v1/vms/{vm}/migrate ({"local": true, "vmm": PATH}
 * for a hand-over on this host, {"to": "HOST:PORT", ...} for a live migration
 * to another host) and POST /v1/upgrade ({"vmm": PATH}). A VMM path must be
 * absolute; whether it runs is the daemon's check. */
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include "api_i.h"

json_t *api_parse_object(const char *body, size_t len, struct mv_error **err)
{
	json_error_t je;
	if (!body || len == 0) {
		mv_err_field(err, -EINVAL, "body", "request body is empty");
		return NULL;
	}
	json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
	if (!root) {
		mv_err_field(err, -EINVAL, "body", "malformed JSON at line %d, column %d: %s", je.line,
			     je.column, je.text);
		return NULL;
	}
	if (!json_is_object(root)) {
		json_decref(root);
		mv_err_field(err, -EINVAL, "body", "request body must be a JSON object");
		return NULL;
	}
	return root;
}

static int get_path(json_t *v, char *out, size_t cap, struct mv_error **err)
{
	if (!json_is_string(v))
		return mv_err_field(err, -EINVAL, "vmm", "vmm must be a string");
	const char *s = json_string_value(v);
	size_t n = json_string_length(v);
	if (strlen(s) != n || n == 0 || n >= cap || s[0] != '/')
		return mv_err_field(err, -EINVAL, "vmm",
				    "vmm must be an absolute path shorter than %zu bytes", cap);
	memcpy(out, s, n + 1);
	return 0;
}

/* host:port with a port in 1..65535 and a host of [A-Za-z0-9.-] or [v6]. */
static int get_addr(json_t *v, char *out, size_t cap, struct mv_error **err)
{
	const char *s = json_is_string(v) ? json_string_value(v) : NULL;
	size_t n = s ? json_string_length(v) : 0;
	const char *colon = s ? strrchr(s, ':') : NULL;
	bool ok = s && strlen(s) == n && n < cap && colon && colon > s && colon[1];
	for (const char *p = s; ok && p < colon; p++)
		ok = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
		     *p == '.' || *p == '-' || *p == '[' || *p == ']' || *p == ':';
	unsigned long port = 0;
	for (const char *p = colon ? colon + 1 : ""; ok && *p; p++) {
		ok = *p >= '0' && *p <= '9';
		port = port * 10 + (unsigned long)(*p - '0');
		ok = ok && port <= 65535;
	}
	if (!ok || port == 0)
		return mv_err_field(err, -EINVAL, "to",
				    "to must be the destination's migration address HOST:PORT");
	memcpy(out, s, n + 1);
	return 0;
}

int mv_api_decode_migrate(const char *body, size_t len, struct mv_migrate_req *out,
			  struct mv_error **err)
{
	static const char *const keys[] = {"local", "vmm", "to", "downtime_ms", "postcopy",
					   "compress", "max_bandwidth", NULL};
	json_t *root = api_parse_object(body, len, err);
	if (!root)
		return -EINVAL;
	struct mv_migrate_req req = {0};
	int r = api_check_keys(root, keys, "", "body", err);
	json_t *local = json_object_get(root, "local"), *to = json_object_get(root, "to");
	json_t *v;
	if (r == 0 && local && !json_is_boolean(local))
		r = mv_err_field(err, -EINVAL, "local", "local must be a boolean");
	if (r == 0 && !json_is_true(local) == !to)
		r = mv_err_field(err, -EINVAL, to ? "to" : "local",
				 "say where: either \"local\": true (a new VMM on this host) or "
				 "\"to\": \"HOST:PORT\" (another host), not both");
	req.local = json_is_true(local);
	if (r == 0 && (v = json_object_get(root, "vmm")) && !req.local)
		r = mv_err_field(err, -EINVAL, "vmm", "vmm applies to local hand-overs only");
	else if (r == 0 && v)
		r = get_path(v, req.vmm, sizeof(req.vmm), err);
	if (r == 0 && to)
		r = get_addr(to, req.to, sizeof(req.to), err);
	static const char *const remote_only[] = {"downtime_ms", "postcopy", "compress",
						  "max_bandwidth"};
	for (size_t i = 0; r == 0 && i < 4; i++)
		if (req.local && json_object_get(root, remote_only[i]))
			r = mv_err_field(err, -EINVAL, remote_only[i],
					 "%s applies to migrations to another host only", remote_only[i]);
	uint64_t u = 0;
	if (r == 0 && (v = json_object_get(root, "downtime_ms")) &&
	    (r = api_get_uint(v, "downtime_ms", 1, 60000, &u, err)) == 0)
		req.downtime_ms = (uint32_t)u;
	if (r == 0 && (v = json_object_get(root, "max_bandwidth")))
		r = api_get_uint(v, "max_bandwidth", 0, INT64_MAX, &req.max_bandwidth, err);
	static const char *const flags[] = {"postcopy", "compress"};
	bool *dst[] = {&req.postcopy, &req.compress};
	for (size_t i = 0; r == 0 && i < 2; i++) {
		v = json_object_get(root, flags[i]);
		if (v && !json_is_boolean(v))
			r = mv_err_field(err, -EINVAL, flags[i], "%s must be a boolean", flags[i]);
		*dst[i] = json_is_true(v);
	}
	json_decref(root);
	if (r == 0)
		*out = req;
	return r;
}

int mv_api_decode_upgrade(const char *body, size_t len, char *vmm, size_t cap,
			  struct mv_error **err)
{
	static const char *const keys[] = {"vmm", NULL};
	json_t *root = api_parse_object(body, len, err);
	if (!root)
		return -EINVAL;
	int r = api_check_keys(root, keys, "", "body", err);
	json_t *v = json_object_get(root, "vmm");
	if (r == 0 && !v)
		r = mv_err_field(err, -EINVAL, "vmm", "vmm (the new VMM binary) is required");
	if (r == 0)
		r = get_path(v, vmm, cap, err);
	json_decref(root);
	return r;
}
