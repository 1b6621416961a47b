/* SPDX-License-Identifier: Apache-2.0 */
/* mod_cryptorefills: the httpd layer's shared declarations.
 *
 * Layering of the glue (an arrow is "calls"; arrows only run down, so no
 * file calls a function of a file that calls it):
 *
 *   mod_cryptorefills.c            module record and hooks
 *     -> mod_cryptorefills_metrics.c   the Prometheus metrics handler
 *     -> mod_cryptorefills_handler.c   route and dispatch
 *          -> _orders.c                orders/validations, orders
 *               -> _idem.c             idempotency claims of POST orders
 *          -> _stream.c                the order stream relay
 *               -> _async.c            the suspended relay (event MPM):
 *                                      handler's side (start, wait for the
 *                                      head) and lifecycle; stream.c passes
 *                                      it the built request and callbacks
 *                    -> _async_h1.c    the loop's own HTTP/1.1 (and TLS)
 *                                      exchange with the upstream; the loop
 *                                      and worker reach it through an ops
 *                                      table set in the stream
 *                    -> _async_loop.c  the per-child loop thread (libcurl,
 *                                      epoll, commands, tick), its setup
 *                         -> _async_worker.c  the worker's side (writes,
 *                                      ending the request), suspend hook,
 *                                      commands to the loop, callbacks to
 *                                      a worker (the files share
 *                                      _async_int.h, included by no other)
 *          -> _catalog.c               catalog routes: obtain (leases, stale,
 *                                      single flight), gzip negotiation
 *               -> _copies.c           this process's copies (cr_ptable):
 *                                      variants, last good entries, parsed
 *                                      catalogs for the validator, their
 *                                      mod_status rows
 *     -> _upstream.c               one builder and runner for upstream calls
 *     -> _respond.c                answers, errors, the upstream-outcome table
 *     -> _shm.c                    counters segment, stream slots, mod_status
 *     -> _socache.c                socache provider, mutex, get/put/claim/lease
 *     -> _sections.c               walks of the config tree: sections that set
 *                                  the handler (start-up check, claimed
 *                                  prefixes), proxy rules that cover them
 *     -> _config.c                 directives, records, merge, resolved values
 *
 * Every file may call any file listed below it (handler -> upstream,
 * catalog -> socache, shm's status hook -> socache, ...), never one above.
 * Checked by reading the calls between the files: catalog -> copies,
 * respond, socache, upstream; copies -> socache; orders -> catalog, idem,
 * respond, upstream; idem -> respond, shm (counters), config, and the
 * core's idempotency store (cr_idstore, not the socache); metrics -> idem
 * (its gauges), socache;
 * stream -> async (and async_loop's cr_relay_account), respond, shm,
 * upstream; async -> async_h1, async_loop, async_worker, shm, upstream;
 * async_h1 -> async_loop, shm, upstream; async_loop -> async_worker, shm,
 * upstream; async_worker -> shm;
 * upstream -> respond;
 * respond -> (shm's counters, by macro); shm -> socache, config; socache ->
 * config; sections -> config; config -> nothing.  The pure core
 * (cr_*.c) is below all of them and includes no httpd header.  The log tags
 * (CRLOGNO) are listed in docs/LOGTAGS.md. */
#ifndef MOD_CRYPTOREFILLS_H
#define MOD_CRYPTOREFILLS_H

#include "httpd.h"
#include "http_config.h"
#include "http_log.h"

#define CR_MODULE_VERSION "0.1.0"
#define CR_HANDLER "cryptorefills"

/* Log tags in the module's own namespace (AH numbers belong to httpd). */
#define CRLOGNO(n) "CR" #n ": "

#ifndef CR_MODULE_MAIN   /* AP_DECLARE_MODULE says it in mod_cryptorefills.c */
APLOG_USE_MODULE(cryptorefills);
#endif
extern module AP_MODULE_DECLARE_DATA cryptorefills_module;

#endif
