/* Catalog routes.  Until the shared-memory cache lands these go upstream
 * through the same path as every other GET. */
#include "mod_cryptorefills_int.h"

int cr_cached_handler(request_rec *r, const cr_dir_conf *c, const cr_route_req *rr,
                      const char *country)
{
    cr_upstream_resp resp;
    cr_fetch(r, c, rr, country, NULL, 0, &resp);
    return cr_relay(r, rr, &resp);
}
