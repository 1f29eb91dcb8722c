/* Strict decoder of the POST /v1/vms body (VmSpec in docs/api/openapi.yaml)
 * into struct mv_vm_spec. Used by the route handler, the CLI (to check specs
 * before sending) and the fuzz target. Every rejection is -EINVAL with the
 * field path ("workload.rate") so the client can point at its mistake;
 * whether the VM fits on this host is the daemon's business, not ours. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include "api_i.h"
#include "memvisor/util.h"

#define WSS_MEMTOUCH_DEFAULT (64ULL << 20)
#define WSS_KVSTORE_DEFAULT (16ULL << 20)
#define SIZE_STR_MAX 32

bool mv_api_name_valid(const char *name)
{
	if (!name)
		return false;
	size_t n = strnlen(name, MV_NAME_MAX + 1);
	if (n == 0 || n > MV_NAME_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = name[i];
		bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
			  (i > 0 && (c == '_' || c == '.' || c == '-'));
		if (!ok)
			return false;
	}
	return true;
}

/* Rejects keys of o not in allowed (NULL-terminated); prefix is "" or
 * "workload.". An empty key is blamed on its parent (where), so the error
 * always names a field. */
int api_check_keys(json_t *o, const char *const *allowed, const char *prefix,
		      const char *where, struct mv_error **err)
{
	const char *k;
	json_t *v;
	json_object_foreach(o, k, v) {
		const char *const *a = allowed;
		while (*a && strcmp(*a, k) != 0)
			a++;
		if (!*a) {
			char f[64];
			if (*k)
				snprintf(f, sizeof(f), "%s%s", prefix, k);
			else
				snprintf(f, sizeof(f), "%s", where);
			return mv_err_field(err, -EINVAL, f, "unknown field \"%.64s\"", k);
		}
	}
	return 0;
}

int api_get_uint(json_t *v, const char *field, uint64_t min, uint64_t max, uint64_t *out,
		    struct mv_error **err)
{
	/* json_is_integer is false for reals, booleans and null: all refused here. */
	if (!json_is_integer(v))
		return mv_err_field(err, -EINVAL, field, "%s must be an integer", field);
	json_int_t i = json_integer_value(v);
	if (i < 0 || (uint64_t)i < min || (uint64_t)i > max)
		return mv_err_field(err, -EINVAL, field, "%s must be between %llu and %llu", field,
				    (unsigned long long)min, (unsigned long long)max);
	*out = (uint64_t)i;
	return 0;
}

/* A size: a non-negative integer of bytes or a string like "512M" / "1.5GiB".
 * The string form is checked here first (digits, one optional fraction, a unit)
 * so mv_parse_size never sees "nan", "0x10" or " 5". */
static int get_size(json_t *v, const char *field, uint64_t *out, struct mv_error **err)
{
	if (json_is_integer(v)) {
		if (json_integer_value(v) < 0)
			return mv_err_field(err, -EINVAL, field, "%s must not be negative", field);
		*out = (uint64_t)json_integer_value(v);
		return 0;
	}
	if (!json_is_string(v))
		return mv_err_field(err, -EINVAL, field,
				    "%s must be an integer of bytes or a size string like \"64M\"", field);
	const char *s = json_string_value(v);
	size_t n = json_string_length(v);
	size_t i = 0, digits = 0;
	while (i < n && s[i] >= '0' && s[i] <= '9')
		i++, digits++;
	if (i < n && s[i] == '.') {
		i++;
		size_t f = i;
		while (i < n && s[i] >= '0' && s[i] <= '9')
			i++;
		if (i == f)
			digits = 0;
	}
	bool ok = digits > 0 && n <= SIZE_STR_MAX && strlen(s) == n;
	for (; ok && i < n; i++)
		ok = strchr("kKmMgGtTiBb", s[i]) != NULL;
	uint64_t b;
	if (!ok || mv_parse_size(s, &b) < 0)
		return mv_err_field(err, -EINVAL, field, "%s: \"%.32s\" is not a size (e.g. 4096, \"64M\", \"1G\")",
				    field, s);
	*out = b;
	return 0;
}

static int get_enum(json_t *v, const char *field, int (*parse)(const char *), const char *names,
		    uint32_t *out, struct mv_error **err)
{
	int r = json_is_string(v) && strlen(json_string_value(v)) == json_string_length(v)
		? parse(json_string_value(v)) : -1;
	if (r < 0)
		return mv_err_field(err, -EINVAL, field, "%s must be one of %s", field, names);
	*out = (uint32_t)r;
	return 0;
}

static int decode_workload(json_t *w, uint64_t memory, struct mv_wl_params *p,
			   struct mv_error **err)
{
	static const char *const keys[] = {"kind", "seed", "wss", "rate", "pattern", "put_pct",
					   "hot_pct", NULL};
	json_t *v;
	uint64_t u;
	int r;

	if (!json_is_object(w))
		return mv_err_field(err, -EINVAL, "workload", "workload must be an object");
	if ((r = api_check_keys(w, keys, "workload.", "workload", err)) < 0)
		return r;
	*p = (struct mv_wl_params){.seed = 1, .pattern = MV_PAT_RANDOM, .put_pct = 70,
				   .hot_pct = 90};
	if (!(v = json_object_get(w, "kind")))
		return mv_err_field(err, -EINVAL, "workload.kind", "workload.kind is required");
	if ((r = get_enum(v, "workload.kind", api_wl_kind_parse, "idle, memtouch, kvstore, secret, writeprobe, flushreload",
			  &p->kind, err)) < 0)
		return r;
	if ((v = json_object_get(w, "seed")) &&
	    (r = api_get_uint(v, "workload.seed", 0, INT64_MAX, &p->seed, err)) < 0)
		return r;
	if ((v = json_object_get(w, "rate")) &&
	    (r = api_get_uint(v, "workload.rate", 0, INT64_MAX, &p->rate, err)) < 0)
		return r;
	if ((v = json_object_get(w, "pattern")) &&
	    (r = get_enum(v, "workload.pattern", api_wl_pattern_parse, "seq, random, hotcold",
			  &p->pattern, err)) < 0)
		return r;
	if ((v = json_object_get(w, "put_pct"))) {
		if ((r = api_get_uint(v, "workload.put_pct", 0, 100, &u, err)) < 0)
			return r;
		p->put_pct = (uint32_t)u;
	}
	if ((v = json_object_get(w, "hot_pct"))) {
		if ((r = api_get_uint(v, "workload.hot_pct", 0, 100, &u, err)) < 0)
			return r;
		p->hot_pct = (uint32_t)u;
	}
	if ((v = json_object_get(w, "wss"))) {
		if ((r = get_size(v, "workload.wss", &p->wss_bytes, err)) < 0)
			return r;
		/* 0 is let through: the Vm encoder echoes idle's 0, and whether a
		 * kind can run without a working set is mv_wl_params_validate's call. */
		if (!MV_IS_ALIGNED(p->wss_bytes, MV_PAGE_SIZE) || p->wss_bytes > memory)
			return mv_err_field(err, -EINVAL, "workload.wss",
					    "workload.wss must be a multiple of %llu and at most memory (%llu)",
					    MV_PAGE_SIZE, (unsigned long long)memory);
	} else if (p->kind == MV_WL_MEMTOUCH) {
		p->wss_bytes = memory < WSS_MEMTOUCH_DEFAULT ? memory : WSS_MEMTOUCH_DEFAULT;
	} else if (p->kind == MV_WL_KVSTORE) {
		uint64_t half = (memory / 2) & ~(MV_PAGE_SIZE - 1);
		p->wss_bytes = half < WSS_KVSTORE_DEFAULT ? half : WSS_KVSTORE_DEFAULT;
	}
	return 0;
}

static int decode_spec(json_t *root, struct mv_vm_spec *out, struct mv_error **err)
{
	static const char *const keys[] = {"name", "memory", "vcpus", "backing", "workload", "fusion",
					   NULL};
	json_t *v;
	uint64_t u;
	int r;

	if (!json_is_object(root))
		return mv_err_field(err, -EINVAL, "body", "request body must be a JSON object");
	if ((r = api_check_keys(root, keys, "", "body", err)) < 0)
		return r;
	*out = (struct mv_vm_spec){.vcpus = 1, .backing = MV_MEM_BACKING_AUTO};

	v = json_object_get(root, "name");
	if (!v)
		return mv_err_field(err, -EINVAL, "name", "name is required");
	if (!json_is_string(v) || json_string_length(v) > MV_NAME_MAX ||
	    strlen(json_string_value(v)) != json_string_length(v) ||
	    !mv_api_name_valid(json_string_value(v)))
		return mv_err_field(err, -EINVAL, "name",
				    "name must match ^[a-z0-9][a-z0-9_.-]{0,62}$");
	memcpy(out->name, json_string_value(v), json_string_length(v) + 1);

	v = json_object_get(root, "memory");
	if (!v)
		return mv_err_field(err, -EINVAL, "memory", "memory is required");
	if ((r = get_size(v, "memory", &out->memory, err)) < 0)
		return r;
	if (out->memory == 0 || !MV_IS_ALIGNED(out->memory, MV_PAGE_SIZE) ||
	    out->memory > MV_MEM_MAX_RAM)
		return mv_err_field(err, -EINVAL, "memory",
				    "memory must be > 0, a multiple of %llu and at most %llu bytes",
				    MV_PAGE_SIZE, (unsigned long long)MV_MEM_MAX_RAM);

	if ((v = json_object_get(root, "vcpus"))) {
		if ((r = api_get_uint(v, "vcpus", 1, MV_MAX_VCPUS, &u, err)) < 0)
			return r;
		out->vcpus = (uint32_t)u;
	}
	if ((v = json_object_get(root, "backing"))) {
		uint32_t b;
		if ((r = get_enum(v, "backing", api_backing_parse, "auto, 4k, hugetlb", &b, err)) < 0)
			return r;
		out->backing = (enum mv_mem_backing)b;
	}
	if ((v = json_object_get(root, "fusion"))) {
		if (!json_is_boolean(v))
			return mv_err_field(err, -EINVAL, "fusion", "fusion must be true or false");
		out->fusion = json_is_true(v);
	}
	/* Fusion merges and copies 4 KiB pages; it cannot share part of a
	 * hugetlb page, so a fusion VM's "auto" means 4 KiB. */
	if (out->fusion && out->backing == MV_MEM_BACKING_HUGETLB)
		return mv_err_field(err, -EINVAL, "backing",
				    "fusion needs 4 KiB guest RAM: use backing auto or 4k");
	if (out->fusion)
		out->backing = MV_MEM_BACKING_4K;
	v = json_object_get(root, "workload");
	if (!v)
		return mv_err_field(err, -EINVAL, "workload", "workload is required");
	return decode_workload(v, out->memory, &out->workload, err);
}

int mv_api_decode_vm_spec(const char *body, size_t len, struct mv_vm_spec *out,
			  struct mv_error **err)
{
	json_error_t je;
	if (!body)
		return mv_err_field(err, -EINVAL, "body", "request body is empty");
	json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
	if (!root)
		return mv_err_field(err, -EINVAL, "body", "malformed JSON at line %d, column %d: %s",
				    je.line, je.column, je.text);
	struct mv_vm_spec spec;
	int r = decode_spec(root, &spec, err);
	json_decref(root);
	if (r == 0)
		*out = spec;
	return r;
}
