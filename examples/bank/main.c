/* main.c - the factd-bank binary. */
#include "bank.h"

int main(int argc, char **argv) { return fd_main(argc, argv, &bank_app); }
