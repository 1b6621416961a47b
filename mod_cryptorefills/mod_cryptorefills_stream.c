/* The order stream relay (in progress). */
#include "mod_cryptorefills_int.h"

int cr_stream_handler(request_rec *r, const cr_dir_conf *c, const cr_route_req *rr,
                      const char *country)
{
    (void)c; (void)rr; (void)country;
    return cr_send_problem(r, HTTP_NOT_IMPLEMENTED, "NOT_IMPLEMENTED", NULL, NULL);
}
