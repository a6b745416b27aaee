/* main.c - the factd binary is the shop app. */
#include "shop.h"

int main(int argc, char **argv) { return fd_main(argc, argv, &shop_app); }
