/*
 * routes.c - the bank's routes, served after the framework's own.  Commands
 * name their aggregate type and command (FD_COMMAND); reads of an
 * aggregate's state and history use the framework's generic handlers.  A
 * transfer is accepted (202) once it is recorded; the transfer saga moves
 * the money and GET /transfers/{id} tells how it ended.
 */
#include "bank.h"

#include "factd/handlers.h"
#include "factd/router.h"

#define CMD FD_COMMAND

const struct fd_route bank_routes[] = {
	/* accounts */
	{ .method = "POST", .pattern = "/accounts", .handler = fd_api_command, .json_body = true,
	  .arg = CMD(bank_account_type, "open", .creates = true) },
	{ .method = "GET", .pattern = "/accounts", .handler = bank_api_list_accounts },
	{ .method = "GET", .pattern = "/accounts/{id}", .handler = fd_api_get_aggregate, .arg = &bank_account_type },
	{ .method = "GET", .pattern = "/accounts/{id}/events", .handler = fd_api_aggregate_events,
	  .arg = &bank_account_type },
	{ .method = "POST", .pattern = "/accounts/{id}/deposit", .handler = fd_api_command, .json_body = true,
	  .arg = CMD(bank_account_type, "deposit") },
	{ .method = "POST", .pattern = "/accounts/{id}/withdraw", .handler = fd_api_command, .json_body = true,
	  .arg = CMD(bank_account_type, "withdraw") },
	{ .method = "POST", .pattern = "/accounts/{id}/close", .handler = fd_api_command,
	  .arg = CMD(bank_account_type, "close") },

	/* transfers */
	{ .method = "POST", .pattern = "/transfers", .handler = fd_api_command, .json_body = true,
	  .arg = CMD(bank_transfer_type, "request", .creates = true, .status = 202) },
	{ .method = "GET", .pattern = "/transfers/{id}", .handler = fd_api_get_aggregate, .arg = &bank_transfer_type },
	{ .method = "GET", .pattern = "/transfers/{id}/events", .handler = fd_api_aggregate_events,
	  .arg = &bank_transfer_type },
	{ .method = "GET", .pattern = "/transfers/{id}/saga", .handler = fd_api_aggregate_saga,
	  .arg = &(const struct fd_aggregate_saga_route){ .type = &bank_transfer_type, .saga = "transfer",
							.missing = "the transfer saga has not taken this transfer in yet" } },

	{ 0 } /* the end */
};
