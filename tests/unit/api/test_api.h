/* Shared by the api unit test files: each returns its cmocka group result. */
#ifndef MV_TEST_API_H
#define MV_TEST_API_H
int api_codec_tests(void);
int api_server_tests(void);
#endif
