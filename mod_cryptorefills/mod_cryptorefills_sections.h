/* SPDX-License-Identifier: Apache-2.0 */
/* Walks of the configuration tree (mod_cryptorefills_sections.c): the
 * sections that route requests to the handler, and the proxy rules that
 * cover their <Location>s. */
#ifndef MOD_CRYPTOREFILLS_SECTIONS_H
#define MOD_CRYPTOREFILLS_SECTIONS_H

#include "mod_cryptorefills_config.h"

/* check_config: refuse a section that routes requests to the handler
 * without a partner id or app version (logs which, returns !OK). */
int cr_config_check(apr_pool_t *ptemp, server_rec *s);
/* check_config, after the check: remember, per server, the <Location>
 * prefixes that set the handler (the routes are relative to them). */
void cr_config_collect_bases(apr_pool_t *pconf, apr_pool_t *ptemp, server_rec *s);
/* Does uri lie below one of the server's <Location> prefixes that set the
 * handler?  The one rule by which the module claims a request before
 * mod_proxy, mod_rewrite and core's file walks see it. */
int cr_config_claims(const server_rec *s, const char *uri);
/* After the location walk: is the handler the request's sections set ours?
 * (A <Location "/api/static"> SetHandler none inside the module's.) */
int cr_config_handler_is_ours(request_rec *r);
/* post_config, second pass: a notice for every ProxyPass or RewriteRule
 * [P] that covers a <Location> of the handler (the module answers there,
 * the proxy rule only elsewhere), unless an earlier `ProxyPass PATH !` of
 * the same server already excludes it. */
void cr_config_notice_shadowing(apr_pool_t *ptemp, server_rec *s);

#endif
