/* Counters of one nng endpoint; see rpc_stat.h. */
#include "rpc_stat.h"

#include <stdbool.h>
#include <string.h>

#include <nng/nng.h>

/* Whether scope s is the one of id: its value (dialers, listeners) or its
 * "id" statistic (sockets, whose scope has no value) says so. */
static bool rpc_stat_is(nng_stat *s, int id)
{
    if (nng_stat_value(s) == (uint64_t)id) {
        return true;
    }
    for (nng_stat *c = nng_stat_child(s); c != NULL; c = nng_stat_next(c)) {
        if (strcmp(nng_stat_name(c), "id") == 0) {
            return nng_stat_value(c) == (uint64_t)id;
        }
    }
    return false;
}

/* The scope named scope of id, depth first under s and its siblings, or
 * NULL. */
static nng_stat *rpc_stat_find_scope(nng_stat *s, const char *scope, int id)
{
    for (; s != NULL; s = nng_stat_next(s)) {
        if (nng_stat_type(s) != NNG_STAT_SCOPE) {
            continue;
        }
        if (strcmp(nng_stat_name(s), scope) == 0 && rpc_stat_is(s, id)) {
            return s;
        }
        nng_stat *found = rpc_stat_find_scope(nng_stat_child(s), scope, id);
        if (found != NULL) {
            return found;
        }
    }
    return NULL;
}

int64_t ws__rpc_stat_sum_in(nng_stat *snap, const char *scope, int id,
                            const char *const *names, size_t n)
{
    nng_stat *st = id > 0 ? rpc_stat_find_scope(snap, scope, id) : NULL;
    if (st == NULL) {
        return -1;
    }
    int64_t sum = 0;
    for (nng_stat *c = nng_stat_child(st); c != NULL; c = nng_stat_next(c)) {
        for (size_t i = 0; i < n; i++) {
            if (strcmp(nng_stat_name(c), names[i]) == 0) {
                sum += (int64_t)nng_stat_value(c);
                break;
            }
        }
    }
    return sum;
}

int64_t ws__rpc_stat_sum(const char *scope, int id, const char *const *names, size_t n)
{
    nng_stat *snap;

    if (id <= 0 || nng_stats_get(&snap) != 0) {
        return -1;
    }
    int64_t sum = ws__rpc_stat_sum_in(snap, scope, id, names, n);
    nng_stats_free(snap);
    return sum;
}
