/* Runs the migrate unit tests: the stream codec (test_stream.c) and live
 * migrations between two guest memories in this process (test_migrate.c). */
#include <signal.h>
#include <stdlib.h>
#include "test_migrate.h"

int main(void)
{
	/* A peer closing its end must show up as EPIPE, not kill the test. */
	signal(SIGPIPE, SIG_IGN);
	/* migrate.sh runs the hugetlb cases this way once it has reserved a pool. */
	const char *filter = getenv("MV_TEST_FILTER");
	if (filter)
		cmocka_set_test_filter(filter);
	int fails = _cmocka_run_group_tests("migrate-stream", mig_stream_tests, mig_stream_ntests,
					    NULL, NULL);
	fails += _cmocka_run_group_tests("migrate-live", mig_live_tests, mig_live_ntests, NULL, NULL);
	return fails ? 1 : 0;
}
