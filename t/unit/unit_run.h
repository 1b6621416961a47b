/* SPDX-License-Identifier: Apache-2.0 */
/* The end of every unit-test program's main(): run the suite, report, and
 * say by the exit status whether anything failed (t/00-unit.t reads both). */
#ifndef CR_UNIT_RUN_H
#define CR_UNIT_RUN_H

#include <stdlib.h>
#include <check.h>
#include "apr_general.h"

static inline int cr_unit_run(Suite *s)
{
    SRunner *sr = srunner_create(s);
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    apr_terminate();
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

#endif
