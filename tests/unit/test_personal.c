/*
 * test_personal.c - the pure parts of personal data (store/personal.h):
 * JSON pointers, declarations, subject ids, master key files, and the
 * setting that names the key file.  No database.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "factd/config.h"
#include "store/personal.h"

Test(personal, json_pointers)
{
	json_t *doc = json_loads("{\"a\":{\"b\":[10,{\"c\":true}]},\"x/y\":1,\"m~n\":2,\"\":3}", 0, NULL);
	cr_assert(doc);
	cr_assert_eq(json_integer_value(fd_json_pointer_get(doc, "/a/b/0")), 10);
	cr_assert(json_is_true(fd_json_pointer_get(doc, "/a/b/1/c")));
	cr_assert_eq(json_integer_value(fd_json_pointer_get(doc, "/x~1y")), 1);
	cr_assert_eq(json_integer_value(fd_json_pointer_get(doc, "/m~0n")), 2);
	cr_assert_eq(json_integer_value(fd_json_pointer_get(doc, "/")), 3);
	static const char *const none[] = { "", "a", "/a/b/2", "/a/b/01", "/a/b/-", "/a/c", "/a~2", "/x/y", "/a/b/0/z" };
	for (size_t i = 0; i < sizeof none / sizeof none[0]; i++)
		cr_assert_null(fd_json_pointer_get(doc, none[i]), "%s", none[i]);
	json_decref(doc);
}

Test(personal, declarations)
{
	json_t *data = json_loads("{\"email\":\"e\",\"addr\":{\"street\":\"s\"},\"n\":null}", 0, NULL);
	char where[40], detail[200];
	static const struct {
		const char *decl, *where; /* where NULL: valid */
	} cases[] = {
		{ "{\"subject\":\"c-1\",\"paths\":[\"/email\",\"/addr/street\",\"/n\"]}", NULL },
		{ "{\"subject\":\"a@b.c:1+x_y-z\",\"paths\":[\"/addr\"]}", NULL },
		{ "[]", "" },
		{ "{\"subject\":\"c-1\",\"paths\":[\"/email\"],\"x\":1}", "/x" },
		{ "{\"paths\":[\"/email\"]}", "/subject" },
		{ "{\"subject\":\"c 1\",\"paths\":[\"/email\"]}", "/subject" },
		{ "{\"subject\":\"c-1\",\"paths\":[]}", "/paths" },
		{ "{\"subject\":\"c-1\",\"paths\":[\"/nope\"]}", "/paths/0" },
		{ "{\"subject\":\"c-1\",\"paths\":[\"/email\",\"/email\"]}", "/paths/1" },
		{ "{\"subject\":\"c-1\",\"paths\":[\"/addr\",\"/addr/street\"]}", "/paths/1" },
		{ "{\"subject\":\"c-1\",\"paths\":[\"/email\",\"\"]}", "/paths/1" },
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		json_t *decl = json_loads(cases[i].decl, 0, NULL);
		cr_assert(decl, "%s", cases[i].decl);
		bool ok = fd_personal_check(decl, data, where, sizeof where, detail, sizeof detail);
		if (!cases[i].where)
			cr_assert(ok, "%s: %s %s", cases[i].decl, where, detail);
		else
			cr_assert(!ok && strcmp(where, cases[i].where) == 0, "%s: ok %d at %s (%s)", cases[i].decl, ok, where,
				  detail);
		json_decref(decl);
	}
	char longid[202];
	memset(longid, 'a', 201);
	longid[201] = '\0';
	cr_assert(!fd_subject_id_valid(longid));
	longid[200] = '\0';
	cr_assert(fd_subject_id_valid(longid));
	cr_assert(!fd_subject_id_valid("") && !fd_subject_id_valid(NULL) && !fd_subject_id_valid("a'b"));
	json_decref(data);
}

static char *file_with(const void *bytes, size_t n)
{
	char path[] = "/tmp/factd-unit-key-XXXXXX";
	int fd = mkstemp(path);
	cr_assert(fd >= 0);
	cr_assert_eq(write(fd, bytes, n), (ssize_t)n);
	close(fd);
	return strdup(path);
}

Test(personal, master_key_files)
{
	struct fd_keyring *kr = NULL;
	char err[512];
	static const char hex[] = "  00112233445566778899AABBCCDDEEFF00112233445566778899aabbccddeeff\n";
	char *p = file_with(hex, sizeof hex - 1);
	cr_assert_eq(fd_keyring_load(p, &kr, err, sizeof err), FD_OK, "%s", err);
	fd_keyring_free(kr);
	free(p);
	unsigned char raw[32];
	memset(raw, 7, sizeof raw);
	p = file_with(raw, sizeof raw);
	cr_assert_eq(fd_keyring_load(p, &kr, err, sizeof err), FD_OK, "%s", err);
	fd_keyring_free(kr);
	free(p);
	static const char *const bad[] = { "", "0011", "zz112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
					   "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff00" };
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		p = file_with(bad[i], strlen(bad[i]));
		kr = NULL;
		cr_assert_eq(fd_keyring_load(p, &kr, err, sizeof err), FD_ERR_INVAL, "%s", bad[i]);
		cr_assert_null(kr);
		cr_assert(strstr(err, "FACTD_MASTER_KEY_FILE") && strstr(err, "64 hexadecimal digits"), "%s", err);
		free(p);
	}
	cr_assert_eq(fd_keyring_load("/nonexistent/key", &kr, err, sizeof err), FD_ERR_INVAL);
	cr_assert(strstr(err, "cannot open"), "%s", err);
}

Test(personal, the_setting)
{
	cr_assert(strstr(fd_config_usage(), "FACTD_MASTER_KEY_FILE"));
	setenv("FACTD_DATABASE_URL", "postgresql://u@h/db", 1);
	setenv("FACTD_MASTER_KEY_FILE", "/etc/factd/master.key", 1);
	struct fd_config cfg;
	char err[256];
	char *argv[] = { "factd", "migrate", NULL };
	cr_assert_eq(fd_config_load(&cfg, 2, argv, err, sizeof err), FD_OK, "%s", err);
	cr_assert_str_eq(cfg.master_key_file, "/etc/factd/master.key");
	fd_config_release(&cfg);
	unsetenv("FACTD_MASTER_KEY_FILE");
	cr_assert_eq(fd_config_load(&cfg, 2, argv, err, sizeof err), FD_OK, "%s", err);
	cr_assert_null(cfg.master_key_file);
	fd_config_release(&cfg);
}
