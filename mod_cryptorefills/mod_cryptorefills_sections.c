/* SPDX-License-Identifier: Apache-2.0 */
/* Walks of the configuration tree: the sections that set the handler
 * (start-up check of partner id and app version, the <Location> prefixes
 * the module claims, whether a request's handler is ours) and the proxy
 * rules that cover those <Location>s (a notice at start-up).  Reads the
 * records of mod_cryptorefills_config.c; never sets them but the bases. */
#include <string.h>

#include "httpd.h"
#include "http_config.h"
#include "http_core.h"
#include "http_log.h"
#include "apr_strings.h"
#include "apr_hash.h"
#include "ap_expr.h"
#include "util_cfgtree.h"

#include "mod_cryptorefills_sections.h"
#include "cr_route.h"

/* ---- cross-directive check ------------------------------------------------ */

/* SetHandler stores an expression; find the directive it came from (by file
 * and line) in the config tree to read its literal argument. */
static const ap_directive_t *find_directive(const ap_directive_t *d, const char *file,
                                            unsigned int line)
{
    for (; d; d = d->next) {
        const ap_directive_t *hit;
        if (d->line_num == (int)line && d->filename && !strcmp(d->filename, file)
            && !strcasecmp(d->directive, "SetHandler")) {
            return d;
        }
        if (d->first_child && (hit = find_directive(d->first_child, file, line))) {
            return hit;
        }
    }
    return NULL;
}

static int sets_our_handler(apr_pool_t *p, const core_dir_config *core,
                            const char **file, int *line)
{
    const ap_directive_t *d;
    char *arg;
    apr_size_t n;

    if (core->handler && !strcasecmp(core->handler, CR_HANDLER)) {
        *file = "?";
        *line = 0;
        return 1;
    }
    if (!core->expr_handler || !core->expr_handler->filename) {
        return 0;
    }
    d = find_directive(ap_conftree, core->expr_handler->filename,
                       core->expr_handler->line_number);
    if (!d || !d->args) {
        return 0;
    }
    arg = apr_pstrdup(p, d->args);
    apr_collapse_spaces(arg, arg);
    n = strlen(arg);
    if (n >= 2 && (arg[0] == '"' || arg[0] == '\'') && arg[n - 1] == arg[0]) {
        arg[n - 1] = '\0';
        arg++;
    }
    *file = d->filename;
    *line = d->line_num;
    return !strcasecmp(arg, CR_HANDLER);
}

/* Calls fn for every section of every server that routes requests to the
 * handler (server defaults, <Location>, <Directory>), with the section's
 * own record merged over the server's as a request would see it. */
typedef int (*section_fn)(void *baton, server_rec *s, const core_dir_config *core,
                          const cr_dir_conf *eff, const char *kind, const char *file, int line);

static int walk_section(apr_pool_t *p, server_rec *s, ap_conf_vector_t *sec, const char *kind,
                        section_fn fn, void *baton)
{
    core_dir_config *core = ap_get_core_module_config(sec);
    cr_dir_conf *srv = ap_get_module_config(s->lookup_defaults, &cryptorefills_module);
    cr_dir_conf *own, *eff;
    const char *file = NULL;
    int line = 0;

    if (!core || !sets_our_handler(p, core, &file, &line)) {
        return OK;
    }
    own = ap_get_module_config(sec, &cryptorefills_module);
    eff = (own && srv && own != srv) ? cr_merge_dir_conf(p, srv, own) : (own ? own : srv);
    return fn(baton, s, core, eff, kind, file, line);
}

static int walk_sections(apr_pool_t *p, server_rec *s, section_fn fn, void *baton)
{
    int rv = OK;
    for (; s; s = s->next) {
        core_server_config *cs = ap_get_core_module_config(s->module_config);
        int i;
        if (walk_section(p, s, s->lookup_defaults, "", fn, baton) != OK) {
            rv = !OK;
        }
        for (i = 0; cs && cs->sec_url && i < cs->sec_url->nelts; i++) {
            if (walk_section(p, s, ((ap_conf_vector_t **)cs->sec_url->elts)[i], "<Location ",
                             fn, baton) != OK) {
                rv = !OK;
            }
        }
        for (i = 0; cs && cs->sec_dir && i < cs->sec_dir->nelts; i++) {
            if (walk_section(p, s, ((ap_conf_vector_t **)cs->sec_dir->elts)[i], "<Directory ",
                             fn, baton) != OK) {
                rv = !OK;
            }
        }
    }
    return rv;
}

/* The upstream accepts calls without a partner id and the partner then
 * silently earns nothing: a section that routes requests to the handler
 * without an id (or app version) must stop the server from starting.
 * Runs in check_config, which `apachectl -t` runs too. */
static int check_one(void *baton, server_rec *s, const core_dir_config *core,
                     const cr_dir_conf *eff, const char *kind, const char *file, int line)
{
    (void)baton;
    if (cr_config_missing(eff ? eff->partner_id : NULL, eff ? eff->app_version : NULL)) {
        ap_log_error(APLOG_MARK, APLOG_STARTUP | APLOG_CRIT, 0, s, CRLOGNO(01001)
                     "SetHandler " CR_HANDLER " at %s:%d (%s%s%s, server %s) without %s: "
                     "the upstream would accept the calls and credit no partner",
                     file, line, kind, *kind ? (core->d ? core->d : "") : "server config",
                     *kind ? ">" : "",
                     s->server_hostname ? s->server_hostname : "main",
                     cr_config_missing(eff ? eff->partner_id : NULL, eff ? eff->app_version : NULL));
        return !OK;
    }
    return OK;
}

int cr_config_check(apr_pool_t *ptemp, server_rec *s)
{
    return walk_sections(ptemp, s, check_one, NULL);
}

/* The handler's routes are relative to a <Location>'s prefix even when no
 * directive of ours sits in that <Location>. */
static int collect_one(void *baton, server_rec *s, const core_dir_config *core,
                       const cr_dir_conf *eff, const char *kind, const char *file, int line)
{
    apr_pool_t *pconf = baton;
    cr_srv_conf *sc = cr_srv_conf_get(s);
    (void)eff; (void)file; (void)line;
    if (*kind == '<' && kind[1] == 'L' && core->d && !core->r) {
        if (!sc->bases) {
            sc->bases = apr_array_make(pconf, 2, sizeof(const char *));
        }
        APR_ARRAY_PUSH(sc->bases, const char *) = apr_pstrdup(pconf, core->d);
    }
    return OK;
}

void cr_config_collect_bases(apr_pool_t *pconf, apr_pool_t *ptemp, server_rec *s)
{
    walk_sections(ptemp, s, collect_one, pconf);
}

int cr_config_claims(const server_rec *s, const char *uri)
{
    const cr_srv_conf *sc = ap_get_module_config(s->module_config, &cryptorefills_module);
    int i;

    if (!sc->bases || !uri || uri[0] != '/') {
        return 0;
    }
    for (i = 0; i < sc->bases->nelts; i++) {
        const char *rel = cr_path_below(uri, APR_ARRAY_IDX(sc->bases, i, const char *));
        if (rel && rel - uri > 1) {     /* never all of "/" */
            return 1;
        }
    }
    return 0;
}

int cr_config_handler_is_ours(request_rec *r)
{
    const core_dir_config *core = ap_get_core_module_config(r->per_dir_config);
    const char *h = core->handler;

    if (core->expr_handler) {
        const char *err = NULL;
        h = ap_expr_str_exec(r, core->expr_handler, &err);
        if (err) {
            return 0;
        }
    }
    return h && !strcasecmp(h, CR_HANDLER);
}

/* ---- proxy rules that cover the handler's <Location>s ------------------------- */

/* One server's view while walking the config tree in file order: the
 * exclusions (`ProxyPass PATH !`) seen so far, and the notices given. */
typedef struct shadow_walk {
    apr_pool_t *p;
    server_rec *main;
    apr_array_header_t *excluded;   /* const char * paths, in file order */
    apr_hash_t *told;               /* "base file:line" already noticed */
} shadow_walk;

/* mod_proxy's prefix rule: PATH covers every URI that starts with it; a
 * trailing slash of PATH also covers the bare prefix (/api/ covers the
 * routes below /api). */
static int path_covers(const char *path, const char *base)
{
    apr_size_t n = strlen(path);
    if (n > 0 && path[n - 1] == '/') {
        n--;
        return !strncmp(base, path, n) && (n == 0 || base[n] == '/' || base[n] == '\0');
    }
    return !strncmp(base, path, n);
}

static server_rec *server_of(server_rec *main, const ap_directive_t *vhost)
{
    server_rec *v;
    if (!vhost) {
        return main;
    }
    for (v = main->next; v; v = v->next) {
        if (v->defn_name && vhost->filename && !strcmp(v->defn_name, vhost->filename)
            && v->defn_line_number == (unsigned)vhost->line_num) {
            return v;
        }
    }
    return NULL;
}

/* A RewriteRule with the P flag, in server or vhost context: does its
 * pattern match a route below base? */
static int rewrite_covers(apr_pool_t *p, const char *args, const char *base, const char **subst)
{
    const char *pat = ap_getword_conf(p, &args);
    const char *flags;
    ap_regex_t *re;
    int hit, icase;

    *subst = ap_getword_conf(p, &args);
    flags = ap_getword_conf(p, &args);
    if (!*pat || pat[0] == '!' || !*flags || flags[0] != '[') {
        return 0;
    }
    {
        char *f = apr_pstrdup(p, flags + 1), *tok, *last;
        int proxy = 0;
        icase = 0;
        for (tok = apr_strtok(f, ",]", &last); tok; tok = apr_strtok(NULL, ",]", &last)) {
            if (!strcasecmp(tok, "P") || !strcasecmp(tok, "proxy")) {
                proxy = 1;
            }
            else if (!strcasecmp(tok, "NC") || !strcasecmp(tok, "nocase")) {
                icase = 1;
            }
        }
        if (!proxy) {
            return 0;
        }
    }
    re = ap_pregcomp(p, pat, AP_REG_EXTENDED | (icase ? AP_REG_ICASE : 0));
    if (!re) {
        return 0;
    }
    hit = !ap_regexec(re, base, 0, NULL, 0)
          || !ap_regexec(re, apr_pstrcat(p, base, "/", NULL), 0, NULL, 0);
    return hit;
}

static void shadow_check(shadow_walk *w, server_rec *v, const ap_directive_t *d,
                         const char *kind, const char *path, const char *target)
{
    const cr_srv_conf *sc = ap_get_module_config(v->module_config, &cryptorefills_module);
    int i, j;

    for (i = 0; sc->bases && i < sc->bases->nelts; i++) {
        const char *b = APR_ARRAY_IDX(sc->bases, i, const char *);
        const char *key;
        int excluded = 0;

        if (path ? !path_covers(path, b) : !rewrite_covers(w->p, d->args, b, &target)) {
            continue;
        }
        for (j = 0; j < w->excluded->nelts && !excluded; j++) {
            excluded = path_covers(APR_ARRAY_IDX(w->excluded, j, const char *), b);
        }
        key = apr_psprintf(w->p, "%s %s:%d", b, d->filename, d->line_num);
        if (excluded || apr_hash_get(w->told, key, APR_HASH_KEY_STRING)) {
            continue;
        }
        apr_hash_set(w->told, key, APR_HASH_KEY_STRING, "");
        ap_log_error(APLOG_MARK, APLOG_NOTICE, 0, v, CRLOGNO(01005)
                     "<Location %s> (SetHandler " CR_HANDLER ") lies under %s %s %s at %s:%d: "
                     "the module answers below %s, the proxy rule only elsewhere", b, kind,
                     path ? path : d->args, path ? target : "", d->filename, d->line_num, b);
    }
}

static void shadow_walk_tree(shadow_walk *w, const ap_directive_t *d, const ap_directive_t *vhost)
{
    for (; d; d = d->next) {
        if (!strcasecmp(d->directive, "<VirtualHost")) {
            shadow_walk w2 = *w;
            /* A vhost inherits the exclusions of the main server's
             * ProxyPass list (mod_proxy puts them first), not its own. */
            w2.excluded = apr_array_copy(w->p, w->excluded);
            shadow_walk_tree(&w2, d->first_child, d);
            continue;
        }
        if (d->first_child) {
            continue;   /* <Location>, <Directory>, <IfModule> ...: see below */
        }
        if (d->args && !strcasecmp(d->directive, "ProxyPass")) {
            const char *args = d->args;
            const char *path = ap_getword_conf(w->p, &args);
            const char *url = ap_getword_conf(w->p, &args);
            server_rec *v = server_of(w->main, vhost);

            if (path[0] != '/' || !*url) {
                continue;
            }
            if (!strcmp(url, "!")) {
                APR_ARRAY_PUSH(w->excluded, const char *) = path;
                continue;
            }
            for (; v; v = vhost ? NULL : v->next) {
                shadow_check(w, v, d, "ProxyPass", path, url);
            }
        }
        else if (d->args && !strcasecmp(d->directive, "RewriteRule")) {
            server_rec *v = server_of(w->main, vhost);
            if (v) {
                shadow_check(w, v, d, "RewriteRule", NULL, NULL);
            }
        }
    }
}

/* <IfModule>/<IfDefine> bodies are already resolved into the tree's top
 * level by the time post_config runs; other sections (<Location>,
 * <Directory>, <Proxy>) hold per-directory rules that mod_proxy and
 * mod_rewrite apply after the module has claimed the request. */
void cr_config_notice_shadowing(apr_pool_t *ptemp, server_rec *s)
{
    shadow_walk w;
    w.p = ptemp;
    w.main = s;
    w.excluded = apr_array_make(ptemp, 4, sizeof(const char *));
    w.told = apr_hash_make(ptemp);
    shadow_walk_tree(&w, ap_conftree, NULL);
}
