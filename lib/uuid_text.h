/*
 * UUID text: the canonical 8-4-4-4-12 form of the ids on the bus and over
 * RPC. One check shared by every service, so that they all agree on what an
 * id is. (Named uuid_text, not uuid, so that "uuid.h" never shadows
 * libuuid's header, whose directory is on the include path.)
 */
#ifndef WS_UUID_TEXT_H
#define WS_UUID_TEXT_H

#include <stdbool.h>

/* Bytes of a canonical UUID text with its NUL. */
#define WS_UUID_TEXT_LEN 37

/* True when s is a UUID in canonical text form: 36 characters, hyphens at
 * 8, 13, 18 and 23, hex digits (either case) elsewhere, then the NUL. NULL
 * is not valid. */
bool ws_uuid_valid(const char *s);

/* The same, but hex digits in lower case only: the one spelling an id is
 * stored and published under. */
bool ws_uuid_canonical(const char *s);

/* The one rule every service applies to an id it is given (HTTP path, bus
 * event, RPC request): any case is accepted and means the same order, and
 * the lower-case spelling is what is stored, published and answered. When s
 * is valid (ws_uuid_valid) writes its lower-case form into out (36
 * characters and the NUL) and returns true; otherwise returns false and
 * leaves out untouched. s and out may be the same buffer. */
bool ws_uuid_normalize(const char *s, char out[WS_UUID_TEXT_LEN] /* OUT */);

#endif
