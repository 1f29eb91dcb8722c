/* Strict decoders of the VMM hand-over requests: POST /v1/vms/{vm}/migrate
 * ({"local": true, "vmm": PATH}) and POST /v1/upgrade ({"vmm": PATH}). A VMM
 * path must be absolute; whether it runs is the daemon's check. */
#include <errno.h>
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

int mv_api_decode_migrate(const char *body, size_t len, struct mv_migrate_req *out,
			  struct mv_error **err)
{
	static const char *const keys[] = {"local", "vmm", NULL};
	json_t *root = api_parse_object(body, len, err);
	if (!root)
		return -EINVAL;
	struct mv_migrate_req req = {0};
	int r = api_check_keys(root, keys, "", "body", err);
	json_t *v = json_object_get(root, "local");
	if (r == 0 && !json_is_true(v))
		r = mv_err_field(err, -EINVAL, "local",
				 "local must be true (a hand-over to a new VMM on this host)");
	req.local = true;
	v = json_object_get(root, "vmm");
	if (r == 0 && v)
		r = get_path(v, req.vmm, sizeof(req.vmm), err);
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
