/* Shared by the migrate unit test files: each exports its cmocka table;
 * test_main.c runs them. */
#ifndef TEST_MIGRATE_H
#define TEST_MIGRATE_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

extern const struct CMUnitTest mig_stream_tests[];
extern const size_t mig_stream_ntests;
extern const struct CMUnitTest mig_live_tests[];
extern const size_t mig_live_ntests;

#endif
