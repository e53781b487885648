/*-------------------------------------------------------------------------
 *
 * kpi_window.h
 *	  The packed rows of streamkpi.window_state (kpi_window_state.c), shared
 *	  by the window step of the KPI engine (kpi_window.c, with the KPI
 *	  worker's cache of part 0 in kpi_window_cache.c) and the SQL
 *	  functions that show the state as rows.
 *
 *-------------------------------------------------------------------------
 */
#ifndef STREAMKPI_KPI_WINDOW_H
#define STREAMKPI_KPI_WINDOW_H

#include "postgres.h"

#include "datatype/timestamp.h"

#include "sketch.h"

/* A region's counters of a track in a window. */
typedef struct WinRegion
{
	const char *name;
	uint32		len;
	int64		plays;
	int64		skips;
	int64		likes;
	int64		listen_ms;
	bool		touched;
} WinRegion;

/* A track of a window. */
typedef struct WinTrack
{
	const char *name;
	uint32		len;
	const uint8 *packed;		/* its players' stored hll value, or NULL */
	uint32		packed_len;
	SketchHll  *users;			/* or a round's players, not yet packed */
	WinRegion  *regions;		/* sorted by name */
	int			nregions;
	bool		touched;		/* the delta has it */
} WinTrack;

extern bytea *window_pack(const WinTrack *ts, int n, bool players);
extern int	window_count_players(const WinTrack *ts, int n);
extern WinTrack *window_unpack(const uint8 *p, uint32 len, int *n);
extern Datum window_bytes_text(const char *p, uint32 len);
extern void window_players_union(WinTrack *ts, int n, WinTrack *const *parts,
								 const int *nparts, int np);

/*
 * A window at most this many times the smallest size, when summed from the
 * smallest windows, takes its players from them (streamkpi._window_track_players):
 * a round writes it no players parts.  Larger ones (an hour, a day) keep
 * their own, so that reading one unions at most this many windows' parts.
 */
#define WINDOW_PLAYERS_INSIDE_MAX 10

/* in kpi_window_cache.c, the KPI worker's part 0 cache */
extern const bytea *window_cache_find(int64 usecs, TimestampTz start, TransactionId xmin);
extern void window_cache_update(const int64 *usecs, const Datum *starts,
								const Datum *part0s, int n);

#endif							/* STREAMKPI_KPI_WINDOW_H */
