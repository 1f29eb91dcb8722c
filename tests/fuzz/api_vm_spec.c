/* libFuzzer target over mv_api_decode_vm_spec (the POST /v1/vms body codec).
 * Besides "never crash", it checks every accepted spec honours the limits the
 * daemon relies on, and that the Vm encoder's workload echo decodes back to
 * the same parameters. Seeds: tests/fuzz/corpus/api_vm_spec/. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "memvisor/api.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int ok, const char *what)
{
	if (!ok) {
		fprintf(stderr, "invariant broken: %s\n", what);
		abort();
	}
}

/* Re-decodes the workload object of an encoded Vm with the same memory. */
static void roundtrip(const struct mv_vm_spec *s)
{
	struct mv_vm_info vm = {.memory = s->memory, .vcpus = s->vcpus, .backing = s->backing,
				.workload = s->workload};
	memcpy(vm.name, s->name, sizeof(vm.name));
	char *txt = mv_api_encode_vm(&vm);
	check(txt != NULL, "encode_vm returned NULL");
	const char *w = strstr(txt, "\"workload\":");
	const char *end = w ? strchr(w, '}') : NULL;
	check(end != NULL, "encoded Vm has a workload object");
	char buf[1024];
	int n = snprintf(buf, sizeof(buf), "{\"name\":\"%s\",\"memory\":%llu,%.*s}}", s->name,
			 (unsigned long long)s->memory, (int)(end - w), w);
	check(n > 0 && (size_t)n < sizeof(buf), "round-trip buffer");
	struct mv_vm_spec back;
	struct mv_error *err = NULL;
	int r = mv_api_decode_vm_spec(buf, (size_t)n, &back, &err);
	if (r != 0)
		fprintf(stderr, "%s\n%s\n", buf, err ? err->msg : "");
	check(r == 0, "workload echo decodes");
	check(memcmp(&back.workload, &s->workload, sizeof(back.workload)) == 0,
	      "workload echo round-trips");
	mv_error_free(err);
	free(txt);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct mv_vm_spec s;
	struct mv_error *err = NULL;
	int r = mv_api_decode_vm_spec((const char *)data, size, &s, &err);
	if (r < 0) {
		check(err != NULL && err->code == r, "a rejection carries an error");
		check(mv_api_http_status(r) == 400, "rejections are 400");
		check(err->field[0] != '\0', "a rejection names a field");
		char *e = mv_api_encode_error(400, err, r);
		check(e != NULL, "encode_error returned NULL");
		free(e);
		mv_error_free(err);
		return 0;
	}
	check(err == NULL, "no error on success");
	check(mv_api_name_valid(s.name), "name valid");
	check(s.memory > 0 && s.memory % 4096 == 0 && s.memory <= MV_MEM_MAX_RAM, "memory in range");
	check(s.vcpus >= 1 && s.vcpus <= MV_MAX_VCPUS, "vcpus in range");
	check(s.backing <= MV_MEM_BACKING_HUGETLB, "backing known");
	check(s.workload.kind < MV_WL__COUNT && s.workload.pattern < MV_PAT__COUNT, "enums known");
	check(s.workload.wss_bytes % 4096 == 0 && s.workload.wss_bytes <= s.memory, "wss in range");
	check(s.workload.put_pct <= 100 && s.workload.hot_pct <= 100, "percentages in range");
	check(s.workload.seed <= INT64_MAX && s.workload.rate <= INT64_MAX, "seed/rate fit JSON");
	roundtrip(&s);
	return 0;
}
