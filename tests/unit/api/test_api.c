/* Unit tests for src/api: codecs (test_codec.c) and a live server on a temp
 * Unix socket with a fake backend, driven by libcurl (test_server.c). */
#include <curl/curl.h>
#include <signal.h>
#include "test_api.h"

int main(void)
{
	signal(SIGPIPE, SIG_IGN);
	curl_global_init(CURL_GLOBAL_DEFAULT);
	int r = api_codec_tests();
	r |= api_server_tests();
	curl_global_cleanup();
	return r ? 1 : 0;
}
