/*
 * Catalog cache; see catalog_cache.h.
 */
#include "catalog_cache.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

struct catalog_cache {
    pthread_mutex_t mu;
    catalog_snapshot *cur; /* guarded by mu; holds one reference */
    uint64_t gen;          /* guarded by mu; bumped by every invalidation */
};

catalog_cache *catalog_cache_new(void)
{
    catalog_cache *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        return NULL;
    }
    pthread_mutex_init(&c->mu, NULL);
    return c;
}

static void catalog_snapshot_free(catalog_snapshot *s)
{
    free(s->body);
    free(s);
}

void catalog_cache_free(catalog_cache *c)
{
    if (c == NULL) {
        return;
    }
    if (c->cur != NULL) {
        catalog_snapshot_free(c->cur);
    }
    pthread_mutex_destroy(&c->mu);
    free(c);
}

catalog_snapshot *catalog_cache_get(catalog_cache *c, uint64_t epoch)
{
    pthread_mutex_lock(&c->mu);
    catalog_snapshot *s = c->cur;
    if (s != NULL && s->epoch != epoch) {
        s = NULL;
    }
    if (s != NULL) {
        s->refs++;
    }
    pthread_mutex_unlock(&c->mu);
    return s;
}

void catalog_snapshot_release(catalog_cache *c, catalog_snapshot *s)
{
    if (s == NULL) {
        return;
    }
    pthread_mutex_lock(&c->mu);
    int left = --s->refs;
    pthread_mutex_unlock(&c->mu);
    if (left == 0) {
        catalog_snapshot_free(s);
    }
}

uint64_t catalog_cache_generation(catalog_cache *c)
{
    pthread_mutex_lock(&c->mu);
    uint64_t g = c->gen;
    pthread_mutex_unlock(&c->mu);
    return g;
}

/* FNV-1a 64: a strong enough validator for a body we produced ourselves. */
static uint64_t catalog_hash(const char *p, size_t n)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)p[i];
        h *= 1099511628211ULL;
    }
    return h;
}

catalog_snapshot *catalog_cache_put(catalog_cache *c, uint64_t gen, uint64_t epoch, char *body,
                                    size_t len)
{
    catalog_snapshot *s = malloc(sizeof(*s));
    if (s == NULL) {
        free(body);
        return NULL;
    }
    s->body = body;
    s->len = len;
    snprintf(s->etag, sizeof(s->etag), "\"%016llx\"",
             (unsigned long long)catalog_hash(body, len));
    s->refs = 1; /* the caller's */
    s->epoch = epoch;
    catalog_snapshot *old = NULL;
    pthread_mutex_lock(&c->mu);
    if (c->gen == gen && epoch != 0) {
        old = c->cur;
        c->cur = s;
        s->refs++; /* the cache's */
        if (old != NULL && --old->refs > 0) {
            old = NULL;
        }
    }
    pthread_mutex_unlock(&c->mu);
    if (old != NULL) {
        catalog_snapshot_free(old);
    }
    return s;
}

void catalog_cache_invalidate(catalog_cache *c)
{
    catalog_snapshot *old = NULL;
    pthread_mutex_lock(&c->mu);
    c->gen++;
    old = c->cur;
    c->cur = NULL;
    if (old != NULL && --old->refs > 0) {
        old = NULL;
    }
    pthread_mutex_unlock(&c->mu);
    if (old != NULL) {
        catalog_snapshot_free(old);
    }
}
