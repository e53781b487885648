#!/usr/bin/env python3
"""What the Sparkify tables must hold for a set of log and song files,
computed here from the JSON files alone, independently of streamkpi.

    expected.py DATA_DIR OUT_DIR [TZ]

DATA_DIR holds log_data/**/*.json (JSON Lines) and song_data/**/*.json (one
object per file).  Writes tab-separated files for COPY into OUT_DIR
(events, songplays, time, users, signals, daily) and prints counts as
name=value lines.  Days and calendar fields are in time zone TZ (UTC).
"""
import glob
import json
import math
import os
import sys
from collections import defaultdict
from datetime import datetime, timezone
from decimal import ROUND_HALF_UP, Decimal
from zoneinfo import ZoneInfo


def ms(seconds):
    # as PostgreSQL's round(float8): half to even, like Python's round
    return None if seconds is None else int(round(seconds * 1000))


def ratio(num, den, places):
    # as PostgreSQL's round(numeric, places): half away from zero
    return (Decimal(num) / Decimal(den)).quantize(Decimal(1).scaleb(-places), ROUND_HALF_UP)


def unquote(s):
    if s is not None and len(s) >= 2 and s[0] == '"' and s[-1] == '"':
        return s[1:-1]
    return s


def tsv(value):
    if value is None:
        return '\\N'
    if isinstance(value, bool):
        return 't' if value else 'f'
    return str(value).replace('\\', '\\\\').replace('\t', '\\t').replace('\n', '\\n')


def write(out_dir, name, rows):
    with open(os.path.join(out_dir, name + '.tsv'), 'w') as f:
        for row in rows:
            f.write('\t'.join(tsv(v) for v in row) + '\n')


def iso(ts_ms):
    return datetime.fromtimestamp(ts_ms / 1000, timezone.utc).isoformat()


def main():
    data, out_dir = sys.argv[1], sys.argv[2]
    os.makedirs(out_dir, exist_ok=True)
    tz = ZoneInfo(sys.argv[3] if len(sys.argv) > 3 else 'UTC')
    events = []
    for path in sorted(glob.glob(os.path.join(data, 'log_data', '**', '*.json'), recursive=True)):
        with open(path) as f:
            events.extend(json.loads(line) for line in f if line.strip())
    songs = []
    for path in sorted(glob.glob(os.path.join(data, 'song_data', '**', '*.json'), recursive=True)):
        with open(path) as f:
            songs.append(json.load(f))

    def local(ts_ms):
        return datetime.fromtimestamp(ts_ms / 1000, timezone.utc).astimezone(tz)

    for e in events:
        e['uid'] = e['userId'] or None
        e['length_ms'] = ms(e['length'])
        e['reg'] = None if e['registration'] is None else int(round(e['registration']))
        e['day'] = local(e['ts']).date()

    write(out_dir, 'events', [
        (iso(e['ts']), e['uid'], e['sessionId'], e['itemInSession'], e['page'],
         e['auth'], e['level'], e['method'], e['status'], e['location'],
         unquote(e['userAgent']), e['song'], e['artist'], e['length_ms'],
         e['firstName'], e['lastName'], e['gender'],
         None if e['reg'] is None else iso(e['reg']))
        for e in events])

    by_title = defaultdict(list)
    for s in songs:
        by_title[(s['title'], s['artist_name'])].append(s)
    plays = [e for e in events if e['page'] == 'NextSong']
    songplays = []
    for e in plays:
        cands = sorted((abs(ms(s['duration']) - e['length_ms']), s['song_id'], s['artist_id'])
                       for s in by_title.get((e['song'], e['artist']), [])
                       if e['length_ms'] is not None and abs(ms(s['duration']) - e['length_ms']) <= 10)
        song_id, artist_id = (cands[0][1], cands[0][2]) if cands else (None, None)
        songplays.append((iso(e['ts']), e['uid'], e['level'], song_id, artist_id,
                          e['sessionId'], e['itemInSession'], e['location'],
                          unquote(e['userAgent'])))
    write(out_dir, 'songplays', songplays)

    times = sorted({e['ts'] for e in plays})
    write(out_dir, 'time', [
        (iso(t), d.hour, d.day, d.isocalendar()[1], d.month, d.year, d.isoweekday())
        for t in times for d in [local(t)]])

    by_user = defaultdict(list)
    for e in events:
        if e['uid'] is not None:
            by_user[e['uid']].append(e)
    users, signals = [], []
    count_pages = ['Thumbs Up', 'Thumbs Down', 'Add to Playlist', 'Add Friend',
                   'Roll Advert', 'Submit Upgrade', 'Submit Downgrade', 'Error', 'Help']
    for uid, evs in sorted(by_user.items()):
        last = max(evs, key=lambda e: (e['ts'], e['itemInSession']))
        users.append((uid, last['firstName'], last['lastName'], last['gender'], last['level'],
                      None if last['reg'] is None else iso(last['reg'])))
        sessions = len({e['sessionId'] for e in evs})
        nsongs = sum(1 for e in evs if e['page'] == 'NextSong')
        counts = [sum(1 for e in evs if e['page'] == p) for p in count_pages]
        cancels = [e['ts'] for e in evs if e['page'] == 'Cancellation Confirmation']
        churned_at = min(cancels) if cancels else None
        days = None if last['reg'] is None else math.floor((last['ts'] - last['reg']) / 86400000)
        signals.append((uid, last['level'], None if last['reg'] is None else iso(last['reg']),
                        iso(min(e['ts'] for e in evs)), iso(last['ts']), days,
                        sessions, nsongs,
                        None if sessions == 0 else ratio(nsongs, sessions, 3),
                        *counts, counts[6] > 0, churned_at is not None,
                        None if churned_at is None else iso(churned_at),
                        None if churned_at is None else local(churned_at).date()))
    write(out_dir, 'users', users)
    write(out_dir, 'signals', signals)

    daily = []
    days = sorted({e['day'] for e in events if e['uid'] is not None})
    for day in days:
        evs = [e for e in events if e['day'] == day and e['uid'] is not None]
        active = {e['uid'] for e in evs}
        new = {e['uid'] for e in evs if e['reg'] is not None and local(e['reg']).date() == day}
        cancellations = sum(1 for e in evs if e['page'] == 'Cancellation Confirmation')
        daily.append((day, len(active), len({e['uid'] for e in evs if e['level'] == 'paid'}),
                      len({e['uid'] for e in evs if e['level'] == 'free'}), len(new),
                      sum(1 for e in evs if e['page'] == 'Submit Upgrade'),
                      sum(1 for e in evs if e['page'] == 'Submit Downgrade'),
                      cancellations, ratio(cancellations, len(active), 6)))
    write(out_dir, 'daily', daily)

    print('events=%d' % len(events))
    print('songplays=%d' % len(plays))
    print('time=%d' % len(times))
    print('users=%d' % len(users))
    print('songs=%d' % len({s['song_id'] for s in songs}))
    print('artists=%d' % len({s['artist_id'] for s in songs}))
    print('matched=%d' % sum(1 for p in songplays if p[3] is not None))


if __name__ == '__main__':
    main()
