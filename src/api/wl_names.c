/* Workload kind and pattern names for the API codecs, from the vm module
 * (vm.h). The API accepts only the canonical spellings of docs/api/openapi.yaml:
 * a name parses only if the vm module would print it back the same way, so
 * aliases the vm module tolerates (e.g. "hot-cold") stay out of the wire format. */
#include <string.h>
#include "api_i.h"

static int canonical(int v, const char *(*name)(uint32_t), const char *s)
{
	if (v < 0)
		return -1;
	const char *n = name((uint32_t)v);
	return n && strcmp(n, s) == 0 ? v : -1;
}

/* Encoders need a string even for a value the vm module has no name for. */
const char *api_wl_kind_name(uint32_t kind)
{
	const char *n = mv_wl_kind_name(kind);
	return n ? n : "unknown";
}

int api_wl_kind_parse(const char *s)
{
	return canonical(mv_wl_kind_parse(s), mv_wl_kind_name, s);
}

const char *api_wl_pattern_name(uint32_t p)
{
	const char *n = mv_wl_pattern_name(p);
	return n ? n : "unknown";
}

int api_wl_pattern_parse(const char *s)
{
	return canonical(mv_wl_pattern_parse(s), mv_wl_pattern_name, s);
}
