/*
 * Seeding the catalog: the prototype's two products on a first start, or the
 * products of a JSON file (an array of webshop.v1.Product, read with the
 * generic transcoder). Seeding inserts products whose id is new, with their
 * balance as the first stock added, and for known ids updates only the name
 * and the price: it never overwrites stock that has moved. A product's
 * first seeding is a unique key (the id, INSERT ... ON CONFLICT DO
 * NOTHING), so replicas that start together on one PostgreSQL seed each
 * product once. Each call runs one transaction on a connection of db.
 */
#ifndef INV_CATALOG_SEED_H
#define INV_CATALOG_SEED_H

#include <stddef.h>

#include "db.h"
#include "webshop/v1/inventory.pb-c.h"

/* Seed products[0..n) in one transaction (see above). Every product is
 * checked first: positive id, non-empty name, price and balance >= 0, no id
 * twice; WS_EINVAL (nothing written) otherwise. *inserted (OUT, may be NULL)
 * is the number of new products. */
ws_err inv_catalog_seed(ws_db *db, const Webshop__V1__Product *const *products, size_t n,
                        size_t *inserted /* OUT, may be NULL */);

/* Seed the prototype's catalog if there are no products yet; otherwise
 * do nothing. *inserted as above. */
ws_err inv_catalog_seed_default(ws_db *db, size_t *inserted /* OUT, may be NULL */);

/* Read path (a JSON array of products, at most 16 MiB) and seed it.
 * WS_EIO if the file cannot be read, WS_EPARSE with the transcoder's message
 * logged, WS_EINVAL as above. */
ws_err inv_catalog_seed_file(ws_db *db, const char *path,
                             size_t *inserted /* OUT, may be NULL */);

#endif
