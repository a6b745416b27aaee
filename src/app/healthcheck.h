/*
 * healthcheck.h - `factd healthcheck`: ask the factd that a configuration
 * describes whether it is ready, as a container's HEALTHCHECK does.
 *
 * Threading: one call at a time per process (it initialises libcurl); the
 * command runs it before any other thread exists.
 */
#ifndef FACTD_APP_HEALTHCHECK_H
#define FACTD_APP_HEALTHCHECK_H

#include <stddef.h>
#include "factd/config.h"
#include "factd/error.h"

/*
 * The URL the probe asks: http:// or https:// (cfg->tls_cert set) to the
 * host of FACTD_LISTEN, a wildcard address (0.0.0.0, ::) replaced by the
 * loopback address of its family, and its port; path /readyz, or /healthz
 * when cfg->healthcheck_live.  FD_ERR_INVAL with a message in errbuf when
 * the port is 0 (an ephemeral port cannot be found from the configuration).
 */
FD_MUST_USE enum fd_err fd_healthcheck_url(const struct fd_config *cfg, char *url, size_t urllen, char *errbuf,
					   size_t errlen);
/*
 * GET that URL within cfg->healthcheck_timeout_ms.  FD_OK when the answer is
 * 200; otherwise an error with a one-line reason in errbuf (the status and
 * the start of the body, or the connection failure).  Over TLS the
 * certificate is not verified: the probe talks to its own process on the
 * address it listens on, whose name the certificate need not carry.
 * Proxy variables of the environment are ignored.
 */
FD_MUST_USE enum fd_err fd_healthcheck(const struct fd_config *cfg, char *errbuf, size_t errlen);

#endif
