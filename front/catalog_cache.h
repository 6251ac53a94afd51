/*
 * The front's catalog cache: the rendered JSON of GET /inventory and its
 * ETag, kept until the inventory publishes a stock change. A fill that
 * started before an invalidation is discarded, so the cache never holds
 * stock older than the last event it saw. Thread-safe; snapshots are
 * reference-counted so a reader never sees its body freed under it.
 */
#ifndef FRONT_CATALOG_CACHE_H
#define FRONT_CATALOG_CACHE_H

#include <stddef.h>
#include <stdint.h>

typedef struct catalog_cache catalog_cache;

typedef struct catalog_snapshot {
    char *body;    /* owned: JSON array of products */
    size_t len;
    char etag[24]; /* quoted strong validator, e.g. "\"9f86d081884c7d65\"" */
    int refs;      /* guarded by the cache mutex */
    uint64_t epoch; /* bus epoch the snapshot was filled in (ws_bus_ready_epoch) */
} catalog_snapshot;

/* NULL on ENOMEM. */
catalog_cache *catalog_cache_new(void);

/* c may be NULL. Outstanding snapshots must have been released. */
void catalog_cache_free(catalog_cache *c);

/* The current snapshot with a reference taken, or NULL when the cache is
 * empty, invalidated, or was filled under another bus epoch than epoch (its
 * stock-changed events may have been missed). Release with
 * catalog_snapshot_release. */
catalog_snapshot *catalog_cache_get(catalog_cache *c, uint64_t epoch);

/* Drop a reference taken by catalog_cache_get or catalog_cache_put. */
void catalog_snapshot_release(catalog_cache *c, catalog_snapshot *s);

/* The generation to pass to catalog_cache_put: read it before fetching. */
uint64_t catalog_cache_generation(catalog_cache *c);

/* Store body (ownership taken, freed even on failure) as the snapshot of bus
 * epoch epoch if no invalidation happened since generation gen was read and
 * epoch is nonzero. Returns a referenced snapshot of body in either case (so
 * the caller can answer with it), or NULL on ENOMEM. */
catalog_snapshot *catalog_cache_put(catalog_cache *c, uint64_t gen, uint64_t epoch, char *body,
                                    size_t len);

/* Forget the snapshot: the next reader fetches afresh. Any thread (the bus
 * network thread calls it on inventory/stock-changed). */
void catalog_cache_invalidate(catalog_cache *c);

#endif
