/* main.c - the library binary: factd serving the library app. */
#include "library.h"

int main(int argc, char **argv) { return fd_main(argc, argv, &library_app); }
