/* The side-channel guard's API codecs: the strict decoder of POST
 * /v1/vms/{vm}/sensitive ({"gpa": N, "len": N}) and the encoders of sensitive
 * ranges and GET /v1/guard (SensitiveRange, GuardStatus in
 * docs/api/openapi.yaml). Used by routes_guard.c, the CLI and the tests. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "api_i.h"
#include "memvisor/util.h"

#define SENSITIVE_LEN_MAX (1ULL << 30)   /* the daemon keeps a frame per page */

int mv_api_decode_sensitive(const char *body, size_t len, uint64_t *gpa, uint64_t *size,
			    struct mv_error **err)
{
	static const char *const allowed[] = {"gpa", "len", NULL};
	json_t *o = api_parse_object(body, len, err);
	if (!o)
		return -EINVAL;
	uint64_t g = 0, l = 0;
	int r = api_check_keys(o, allowed, "", "body", err);
	json_t *jg = json_object_get(o, "gpa"), *jl = json_object_get(o, "len");
	if (r == 0 && !jg)
		r = mv_err_field(err, -EINVAL, "gpa", "gpa is required");
	if (r == 0 && !jl)
		r = mv_err_field(err, -EINVAL, "len", "len is required");
	if (r == 0)
		r = api_get_uint(jg, "gpa", 0, INT64_MAX, &g, err);
	if (r == 0 && g % MV_PAGE_SIZE)
		r = mv_err_field(err, -EINVAL, "gpa", "gpa must be a multiple of 4096");
	if (r == 0)
		r = api_get_uint(jl, "len", MV_PAGE_SIZE, SENSITIVE_LEN_MAX, &l, err);
	if (r == 0 && l % MV_PAGE_SIZE)
		r = mv_err_field(err, -EINVAL, "len", "len must be a multiple of 4096");
	if (r == 0 && g + l < g)
		r = mv_err_field(err, -EINVAL, "len", "gpa + len wraps around");
	json_decref(o);
	if (r == 0) {
		*gpa = g;
		*size = l;
	}
	return r;
}

static json_t *range_json(const void *elem)
{
	const struct mv_sensitive_range *r = elem;
	json_t *runs = json_array();
	for (uint32_t i = 0; runs && i < r->nruns && i < MV_SENSITIVE_RUNS_MAX; i++)
		json_array_append_new(runs, json_pack("{s:o, s:o, s:o}", "gpa", api_ju(r->runs[i].gpa),
						      "pfn", api_ju(r->runs[i].pfn), "pages",
						      api_ju(r->runs[i].pages)));
	if (!runs)
		return NULL;
	return json_pack("{s:o, s:o, s:o, s:o, s:o, s:o, s:b, s:o, s:o, s:o}", "id", api_ju(r->id),
			 "vm", JSTR(r->vm), "gpa", api_ju(r->gpa), "len", api_ju(r->len), "pages",
			 api_ju(r->len / MV_PAGE_SIZE), "created_at", api_ju(r->created_at), "locked",
			 r->locked, "resident_pages", api_ju(r->resident_pages), "runs_total",
			 api_ju(r->runs_total), "runs", runs);
}

char *mv_api_encode_sensitive(const struct mv_sensitive_range *r)
{
	return api_dump(range_json(r));
}

char *mv_api_encode_sensitive_list(const struct mv_sensitive_range *r, size_t n)
{
	return api_encode_list("ranges", r, n, sizeof(*r), range_json);
}

static json_t *finding_json(const void *elem)
{
	const struct mv_guard_finding_info *f = elem;
	return json_pack("{s:o, s:o, s:o, s:o, s:o, s:{s:o, s:o, s:o, s:o}}", "range",
			 api_ju(f->range_id), "vm", JSTR(f->vm), "other_vm", JSTR(f->other_vm),
			 "kind", JSTR(f->kind), "pages", api_ju(f->pages), "example", "gpa",
			 api_ju(f->gpa), "pfn", api_ju(f->pfn), "other_gpa", api_ju(f->other_gpa),
			 "other_pfn", api_ju(f->other_pfn));
}

char *mv_api_encode_guard(const struct mv_guard_info *g)
{
	json_t *arr = api_json_list(g->findings, g->nfindings, sizeof(*g->findings), finding_json);
	if (!arr)
		return NULL;
	return api_dump(json_pack("{s:I, s:I, s:I, s:o, s:f, s:o, s:o, s:o, s:o}", "colours",
			      (json_int_t)g->colours, "row_shift", (json_int_t)g->row_shift,
			      "llc_colours", (json_int_t)g->llc_colours, "checks", api_ju(g->checks),
			      "cpu_s", (double)g->cpu_ns / 1e9,
			      "ranges", api_ju(g->ranges), "protected_pages", api_ju(g->protected_pages),
			      "events", api_ju(g->events), "findings", arr));
}
