/*
 * The front's catalog cache: fills, invalidation races, bus epochs, ETags,
 * and snapshot lifetimes.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "catalog_cache.h"

static catalog_snapshot *put(catalog_cache *c, uint64_t gen, uint64_t epoch, const char *body)
{
    return catalog_cache_put(c, gen, epoch, strdup(body), strlen(body));
}

Test(catalog_cache, empty_cache_has_no_snapshot)
{
    catalog_cache *c = catalog_cache_new();
    cr_assert_null(catalog_cache_get(c, 1));
    catalog_cache_free(c);
    catalog_cache_free(NULL);
}

Test(catalog_cache, fill_is_served_until_invalidated)
{
    catalog_cache *c = catalog_cache_new();
    catalog_snapshot *s = put(c, catalog_cache_generation(c), 7, "[1]");
    catalog_snapshot_release(c, s);
    s = catalog_cache_get(c, 7);
    cr_assert_not_null(s);
    cr_assert_str_eq(s->body, "[1]");
    catalog_snapshot_release(c, s);
    catalog_cache_invalidate(c);
    cr_assert_null(catalog_cache_get(c, 7));
    catalog_cache_free(c);
}

Test(catalog_cache, fill_started_before_invalidation_is_discarded)
{
    catalog_cache *c = catalog_cache_new();
    uint64_t gen = catalog_cache_generation(c);
    catalog_cache_invalidate(c); /* a stock change arrives mid-fetch */
    catalog_snapshot *s = put(c, gen, 7, "[stale]");
    cr_assert_not_null(s, "the caller still gets its answer");
    cr_assert_str_eq(s->body, "[stale]");
    catalog_snapshot_release(c, s);
    cr_assert_null(catalog_cache_get(c, 7), "but it is not cached");
    catalog_cache_free(c);
}

Test(catalog_cache, snapshot_of_another_bus_epoch_is_not_served)
{
    catalog_cache *c = catalog_cache_new();
    catalog_snapshot_release(c, put(c, catalog_cache_generation(c), 3, "[1]"));
    cr_assert_null(catalog_cache_get(c, 4), "reconnected: events may have been missed");
    cr_assert_null(catalog_cache_get(c, 0), "not subscribed");
    catalog_snapshot_release(c, put(c, catalog_cache_generation(c), 0, "[2]"));
    cr_assert_null(catalog_cache_get(c, 0), "a fill while not subscribed is never cached");
    catalog_cache_free(c);
}

Test(catalog_cache, etag_follows_the_body)
{
    catalog_cache *c = catalog_cache_new();
    catalog_snapshot *a = put(c, catalog_cache_generation(c), 1, "[1]");
    catalog_snapshot *b = put(c, catalog_cache_generation(c), 1, "[2]");
    catalog_snapshot *a2 = put(c, catalog_cache_generation(c), 1, "[1]");
    cr_assert_str_neq(a->etag, b->etag);
    cr_assert_str_eq(a->etag, a2->etag);
    cr_assert_eq(a->etag[0], '"');
    catalog_snapshot_release(c, a);
    catalog_snapshot_release(c, b);
    catalog_snapshot_release(c, a2);
    catalog_cache_free(c);
}

Test(catalog_cache, snapshot_outlives_invalidation_while_referenced)
{
    catalog_cache *c = catalog_cache_new();
    catalog_snapshot_release(c, put(c, catalog_cache_generation(c), 1, "[held]"));
    catalog_snapshot *s = catalog_cache_get(c, 1);
    catalog_cache_invalidate(c);
    cr_assert_str_eq(s->body, "[held]", "a reader keeps its body after invalidation");
    catalog_snapshot_release(c, s);
    catalog_cache_free(c);
}
