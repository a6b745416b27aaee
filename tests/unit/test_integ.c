/*
 * test_integ.c - the pure parts of consumer groups and webhooks: which
 * addresses a webhook may not reach, the URL rule without name lookups, the
 * signature against HMAC-SHA256 computed by `openssl dgst -hmac`, and names.
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <string.h>

#include "http/input_integ.h"
#include "push/webhook.h"

static bool private_addr(const char *text)
{
	struct sockaddr_storage ss = { 0 };
	if (strchr(text, ':')) {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
		a->sin6_family = AF_INET6;
		cr_assert_eq(inet_pton(AF_INET6, text, &a->sin6_addr), 1, "%s", text);
	} else {
		struct sockaddr_in *a = (struct sockaddr_in *)&ss;
		a->sin_family = AF_INET;
		cr_assert_eq(inet_pton(AF_INET, text, &a->sin_addr), 1, "%s", text);
	}
	return fd_webhook_addr_private((struct sockaddr *)&ss);
}

Test(integ, private_and_public_addresses)
{
	static const char *const priv[] = { "127.0.0.1", "127.255.0.9", "10.0.0.1", "172.16.0.1", "172.31.255.255",
					    "192.168.1.1", "169.254.169.254", "100.64.0.1", "0.0.0.0", "224.0.0.1",
					    "255.255.255.255", "198.18.0.1", "::1", "::", "fe80::1", "fc00::1", "fd12::1",
					    "ff02::1", "::ffff:127.0.0.1", "::ffff:10.1.1.1", "64:ff9b::a00:1", "2001:db8::1" };
	static const char *const pub[] = { "8.8.8.8", "1.1.1.1", "172.32.0.1", "172.15.255.255", "100.128.0.1",
					   "192.169.0.1", "2606:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808" };
	for (size_t i = 0; i < sizeof priv / sizeof priv[0]; i++)
		cr_assert(private_addr(priv[i]), "%s should be refused", priv[i]);
	for (size_t i = 0; i < sizeof pub / sizeof pub[0]; i++)
		cr_assert_not(private_addr(pub[i]), "%s should be allowed", pub[i]);
}

Test(integ, url_rule)
{
	char why[256];
	cr_assert_eq(fd_webhook_url_check("https://hooks.example.com/x?y=1", true, why, sizeof why), FD_OK);
	cr_assert_eq(fd_webhook_url_check("http://[::1]:8080/h", true, why, sizeof why), FD_OK);
	cr_assert_eq(fd_webhook_url_check("ftp://example.com/", true, why, sizeof why), FD_ERR_INVAL);
	cr_assert_eq(fd_webhook_url_check("https://user:pw@example.com/", true, why, sizeof why), FD_ERR_INVAL);
	cr_assert(strstr(why, "user name"));
	cr_assert_eq(fd_webhook_url_check("http://127.0.0.1:9/", false, why, sizeof why), FD_ERR_INVAL);
	cr_assert(strstr(why, "FACTD_WEBHOOK_ALLOW_PRIVATE"));
	cr_assert_eq(fd_webhook_url_check("http://localhost/", false, why, sizeof why), FD_ERR_INVAL);
	cr_assert_eq(fd_webhook_url_check("http://[::ffff:10.0.0.1]/", false, why, sizeof why), FD_ERR_INVAL);
	cr_assert_eq(fd_webhook_url_check("http://2130706433/", false, why, sizeof why), FD_ERR_INVAL, "127.0.0.1 in decimal");
}

Test(integ, signature)
{
	/* RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?"; here the data is "<t>.<body>" */
	char sig[128];
	cr_assert_eq(fd_webhook_sign("Jefe", 0, "what do ya want for nothing?", 28, sig, sizeof sig), FD_OK);
	cr_assert_str_neq(sig, "t=0,v1=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
			  "the time must be signed too");
	/* with the frame: HMAC-SHA256("Jefe", "1700000000.{}") computed with openssl dgst -hmac */
	cr_assert_eq(fd_webhook_sign("Jefe", 1700000000, "{}", 2, sig, sizeof sig), FD_OK);
	cr_assert_str_eq(sig, "t=1700000000,v1=d3793e2b4103edfbd98cc19591832f5fad701d413db9fcae0ae7dab8184ed207");
}

Test(integ, names)
{
	cr_assert(fd_integ_name_valid("billing-v2.eu_1"));
	cr_assert_not(fd_integ_name_valid(".hidden"));
	cr_assert_not(fd_integ_name_valid("a/b"));
	cr_assert_not(fd_integ_name_valid(""));
	char longname[102];
	memset(longname, 'a', 101);
	longname[101] = '\0';
	cr_assert_not(fd_integ_name_valid(longname));
	cr_assert(fd_integ_consumer_valid("worker-1@host:42"));
	cr_assert_not(fd_integ_consumer_valid("a b"));
}
