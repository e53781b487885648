/*-------------------------------------------------------------------------
 *
 * sketch.h
 *	  Sketch aggregates (HyperLogLog on postgresql-hll's format, the topn
 *	  heavy-hitters type) and event-time window functions.
 *
 *	  Nothing here keeps session state: every parameter that changes a
 *	  sketch's result is an argument of the call.
 *
 *-------------------------------------------------------------------------
 */
#ifndef STREAMKPI_SKETCH_H
#define STREAMKPI_SKETCH_H

#include "postgres.h"

/* in sketch_hll.c */
extern uint64 sketch_murmur3_64(const void *key, size_t len, uint32 seed);

#endif							/* STREAMKPI_SKETCH_H */
