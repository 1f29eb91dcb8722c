/* libFuzzer target over mv_api_decode_guard_policy (the POST /v1/guard/policy
 * body codec, overlaying the defaults). Besides "never crash": an accepted
 * policy passes mv_guard_policy_check, and its encoding decodes back to the
 * same policy. Seeds: tests/fuzz/corpus/api_guard_policy/. */
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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct mv_guard_policy p;
	mv_guard_policy_default(&p);
	struct mv_error *err = NULL;
	if (mv_api_decode_guard_policy((const char *)data, size, &p, &err) != 0) {
		check(err != NULL, "a refusal says why");
		mv_error_free(err);
		return 0;
	}
	check(mv_guard_policy_check(&p, NULL) == 0, "accepted policy is valid");
	char *txt = mv_api_encode_guard_policy(&p);
	check(txt != NULL, "encode");
	struct mv_guard_policy back;
	memset(&back, 0, sizeof(back));
	int r = mv_api_decode_guard_policy(txt, strlen(txt), &back, &err);
	if (r != 0)
		fprintf(stderr, "%s\n%s\n", txt, err ? err->msg : "");
	check(r == 0, "encoded policy decodes");
	check(back.detect == p.detect && back.action == p.action &&
	      back.throttle_pct == p.throttle_pct && back.wp_min_pages == p.wp_min_pages &&
	      back.wp_fresh_ms == p.wp_fresh_ms && back.wp_window_ms == p.wp_window_ms &&
	      back.wp_min_pct == p.wp_min_pct && back.sa_windows == p.sa_windows &&
	      back.sa_min_pct == p.sa_min_pct && back.ndeny == p.ndeny, "round trip");
	for (uint32_t i = 0; i < p.ndeny; i++)
		check(back.deny[i].xxh3 == p.deny[i].xxh3 &&
		      strcmp(back.deny[i].name, p.deny[i].name) == 0, "deny round trip");
	free(txt);
	return 0;
}
