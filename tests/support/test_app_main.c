/* test_app_main.c - factd-test-app: the test-only app as a process of its own, for suites that run one. */
#include "test_app.h"

int main(int argc, char **argv) { return fd_main(argc, argv, &fd_test_app); }
