/* The guard policy and detection events in the API (GuardPolicy,
 * GuardEvent in docs/api/openapi.yaml): a strict decoder of POST
 * /v1/guard/policy that overlays the fields present on the current policy
 * (so "set the action" is one field), and the encoders. Every field is
 * checked for type and range (mv_guard_policy_check); errors name it. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "api_i.h"

static int get_u32(json_t *o, const char *key, const char *field, uint32_t *out,
		   struct mv_error **err)
{
	json_t *v = json_object_get(o, key);
	uint64_t x;
	if (!v)
		return 0;
	int r = api_get_uint(v, field, 0, UINT32_MAX, &x, err);
	if (r == 0)
		*out = (uint32_t)x;
	return r;
}

static int get_obj(json_t *o, const char *key, const char *const *allowed, const char *prefix,
		   json_t **out, struct mv_error **err)
{
	*out = json_object_get(o, key);
	if (!*out)
		return 0;
	if (!json_is_object(*out))
		return mv_err_field(err, -EINVAL, key, "%s must be an object", key);
	return api_check_keys(*out, allowed, prefix, key, err);
}

static int hex64(const char *s, uint64_t *out)
{
	if (strlen(s) != 16)
		return -1;
	uint64_t v = 0;
	for (int i = 0; i < 16; i++) {
		char c = s[i];
		int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
			: c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
		if (d < 0)
			return -1;
		v = v << 4 | (uint64_t)d;
	}
	*out = v;
	return 0;
}

static int get_deny(json_t *arr, struct mv_guard_policy *p, struct mv_error **err)
{
	static const char *const allowed[] = {"name", "xxh3", NULL};
	if (!json_is_array(arr))
		return mv_err_field(err, -EINVAL, "deny", "deny must be an array");
	if (json_array_size(arr) > MV_GUARD_DENY_MAX)
		return mv_err_field(err, -EINVAL, "deny", "at most %d deny entries", MV_GUARD_DENY_MAX);
	p->ndeny = 0;
	size_t i;
	json_t *e;
	json_array_foreach(arr, i, e) {
		if (!json_is_object(e))
			return mv_err_field(err, -EINVAL, "deny", "deny entry %zu must be an object", i);
		int r = api_check_keys(e, allowed, "deny.", "deny", err);
		if (r < 0)
			return r;
		json_t *n = json_object_get(e, "name"), *h = json_object_get(e, "xxh3");
		if (!json_is_string(n) || json_string_length(n) == 0 ||
		    json_string_length(n) > MV_GUARD_NAME_MAX)
			return mv_err_field(err, -EINVAL, "deny.name",
					    "deny entry %zu: name must be a string of 1..%d bytes", i,
					    MV_GUARD_NAME_MAX);
		struct mv_guard_deny *d = &p->deny[p->ndeny];
		if (!json_is_string(h) || hex64(json_string_value(h), &d->xxh3) < 0)
			return mv_err_field(err, -EINVAL, "deny.xxh3",
					    "deny entry %zu: xxh3 must be 16 hex digits", i);
		snprintf(d->name, sizeof(d->name), "%s", json_string_value(n));
		p->ndeny++;
	}
	return 0;
}

int mv_api_decode_guard_policy(const char *body, size_t len, struct mv_guard_policy *p,
			       struct mv_error **err)
{
	static const char *const top[] = {"detect", "action", "throttle_pct", "write_probe",
					  "sampled_access", "deny", NULL};
	static const char *const wp_keys[] = {"min_pages", "fresh_ms", "window_ms", "min_pct", NULL};
	static const char *const sa_keys[] = {"windows", "min_pct", NULL};
	json_t *o = api_parse_object(body, len, err);
	if (!o)
		return -EINVAL;
	struct mv_guard_policy n = *p;
	json_t *wp = NULL, *sa = NULL, *v;
	int r = api_check_keys(o, top, "", "body", err);
	if (r == 0 && (v = json_object_get(o, "detect"))) {
		if (!json_is_boolean(v))
			r = mv_err_field(err, -EINVAL, "detect", "detect must be true or false");
		n.detect = json_is_true(v);
	}
	if (r == 0 && (v = json_object_get(o, "action"))) {
		int a = json_is_string(v) ? mv_guard_action_parse(json_string_value(v)) : -1;
		if (a < 0)
			r = mv_err_field(err, -EINVAL, "action",
					 "action must be one of log, unfuse, throttle, pause, stop, move");
		n.action = (enum mv_guard_action)(a < 0 ? 0 : a);
	}
	if (r == 0)
		r = get_u32(o, "throttle_pct", "throttle_pct", &n.throttle_pct, err);
	if (r == 0)
		r = get_obj(o, "write_probe", wp_keys, "write_probe.", &wp, err);
	if (r == 0 && wp)
		r = get_u32(wp, "min_pages", "write_probe.min_pages", &n.wp_min_pages, err);
	if (r == 0 && wp)
		r = get_u32(wp, "fresh_ms", "write_probe.fresh_ms", &n.wp_fresh_ms, err);
	if (r == 0 && wp)
		r = get_u32(wp, "window_ms", "write_probe.window_ms", &n.wp_window_ms, err);
	if (r == 0 && wp)
		r = get_u32(wp, "min_pct", "write_probe.min_pct", &n.wp_min_pct, err);
	if (r == 0)
		r = get_obj(o, "sampled_access", sa_keys, "sampled_access.", &sa, err);
	if (r == 0 && sa)
		r = get_u32(sa, "windows", "sampled_access.windows", &n.sa_windows, err);
	if (r == 0 && sa)
		r = get_u32(sa, "min_pct", "sampled_access.min_pct", &n.sa_min_pct, err);
	if (r == 0 && (v = json_object_get(o, "deny")))
		r = get_deny(v, &n, err);
	if (r == 0)
		r = mv_guard_policy_check(&n, err);
	json_decref(o);
	if (r == 0)
		*p = n;
	return r;
}

static json_t *deny_json(const void *elem)
{
	const struct mv_guard_deny *d = elem;
	char h[17];
	snprintf(h, sizeof(h), "%016llx", (unsigned long long)d->xxh3);
	return json_pack("{s:o, s:s}", "name", JSTR(d->name), "xxh3", h);
}

char *mv_api_encode_guard_policy(const struct mv_guard_policy *p)
{
	size_t n = p->ndeny < MV_GUARD_DENY_MAX ? p->ndeny : MV_GUARD_DENY_MAX;
	json_t *deny = api_json_list(p->deny, n, sizeof(p->deny[0]), deny_json);
	if (!deny)
		return NULL;
	return api_dump(json_pack("{s:b, s:s, s:I, s:{s:I, s:I, s:I, s:I}, s:{s:I, s:I}, s:o}", "detect",
			      p->detect, "action", mv_guard_action_name(p->action), "throttle_pct",
			      (json_int_t)p->throttle_pct, "write_probe", "min_pages",
			      (json_int_t)p->wp_min_pages, "fresh_ms", (json_int_t)p->wp_fresh_ms,
			      "window_ms", (json_int_t)p->wp_window_ms, "min_pct",
			      (json_int_t)p->wp_min_pct, "sampled_access", "windows",
			      (json_int_t)p->sa_windows, "min_pct", (json_int_t)p->sa_min_pct,
			      "deny", deny));
}

static json_t *event_json(const void *elem)
{
	const struct mv_guard_event_info *e = elem;
	return json_pack("{s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:{s:o, s:o, s:o}, s:f}",
			 "id", api_ju(e->id), "time_ms", api_ju(e->time_ms), "suspect",
			 JSTR(e->suspect), "victim", JSTR(e->victim), "signal", JSTR(e->signal),
			 "action", JSTR(e->action), "outcome", JSTR(e->outcome), "rule",
			 JSTR(e->rule), "evidence", "count", api_ju(e->evidence), "of",
			 api_ju(e->evidence_of), "gpa", api_ju(e->gpa), "latency_ms", e->latency_ms);
}

char *mv_api_encode_guard_events(const struct mv_guard_event_info *e, size_t n)
{
	return api_encode_list("events", e, n, sizeof(*e), event_json);
}
