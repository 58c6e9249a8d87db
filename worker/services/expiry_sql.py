"""The sweep's expiry on PostgreSQL, set-based: one statement per chunk of expired rows.

The ORM path (``worker.services.sweep._act`` with ``mark_stale_row``) is the rule; these
two statements are its twin for the periodic sweep on PostgreSQL, where marking rows one by
one cost a round trip each. Tests hold them to it (``tests/services/test_sweep.py``,
``test_scheduler.py``: the same rows queued, the same requests written).
"""

from __future__ import annotations

from sqlalchemy import text

from worker.domain.scheduling import Priority
from worker.storage.freshness import EXPIRY_DUE_SQL

# Both expiry statements start by locking a chunk of due rows (SKIP LOCKED: rows busy in the
# pipeline are left for the next sweep), noting which still need a request.
_PICK_EXPIRED = (
    """
WITH picked AS (
    SELECT ctid AS tid, user_id, (NOT manual_override AND regen_request_id IS NULL
                                  AND regen_queued_at IS NULL) AS ask
    FROM user_profile_highlights
    WHERE user_id > :after AND """
    + EXPIRY_DUE_SQL
    + """
    ORDER BY user_id LIMIT :limit
    FOR UPDATE SKIP LOCKED"""
)

# The same rules as mark_stale_row + request_regeneration (see staleness.py / outbox.py), as
# one statement per chunk: lock the chunk (SKIP LOCKED: rows busy in the pipeline are left
# for the next sweep), mark (joined by ctid: the locked rows cannot move before commit),
# and queue a request for the unlocked rows without one, all in one outbox row. Request ids
# are 32 hex digits like ``outbox.new_request_id``'s: 64 random bits per chunk, then the
# user id (once per chunk), which costs a fifth of the sweep less than a random uuid per row.
EXPIRE_CHUNK = text(
    _PICK_EXPIRED
    + """
), marked AS (
    UPDATE user_profile_highlights h SET
        generation = h.generation + 1, is_stale = true, stale_since = :now,
        stale_reason = 'expired', updated_at = :now, covered_fingerprint = NULL,
        regen_request_id = CASE WHEN p.ask
            THEN CAST(:ids AS text) || lpad(to_hex(h.user_id), 16, '0')
            ELSE h.regen_request_id END,
        regen_requested_at = CASE WHEN p.ask THEN :now ELSE h.regen_requested_at END,
        regen_generation = CASE WHEN p.ask THEN h.generation + 1 ELSE h.regen_generation END,
        regen_attempts = CASE WHEN p.ask THEN 1 ELSE h.regen_attempts END,
        regen_request_lane = CASE WHEN p.ask THEN 'batch' ELSE h.regen_request_lane END,
        regen_request_reason = CASE WHEN p.ask THEN 'expired' ELSE h.regen_request_reason END,
        regen_token_estimate = CASE WHEN p.ask THEN NULL ELSE h.regen_token_estimate END
    FROM picked p WHERE h.ctid = p.tid
    RETURNING h.user_id, h.generation, h.snapshot_hash, h.regen_request_id, p.ask,
        h.input_version, h.input_fingerprint
), queued AS (
    INSERT INTO outbox (topic, messages, message_count, created_at)
    SELECT :stream, string_agg(format(
        E'%s\\t{"event_id":"%s","user_id":%s,"reason":"expired","generation":%s,'
        '"snapshot_hash":%s,"requested_at":%s,"trigger":"sweep","priority"\\:"""
    + str(int(Priority.EXPIRED))
    + """,'
        '"input_version":%s,"input_fingerprint":"%s","lane":"batch","respond_by":%s}',
        user_id, regen_request_id, user_id, generation,
        coalesce(to_json(snapshot_hash)::text, 'null'), to_json(CAST(:requested_at AS text)),
        input_version, lpad(to_hex(input_fingerprint), 16, '0'),
        to_json(CAST(:respond_by AS text))
    ), E'\\n'), count(*), :now
    FROM marked WHERE ask HAVING count(*) > 0
    RETURNING message_count
)
SELECT (SELECT max(user_id) FROM marked), (SELECT count(*) FROM marked),
       (SELECT coalesce(sum(message_count), 0) FROM queued)
"""
)

# The same with a scheduler (``worker.services.staleness.enqueue``): the chunk's requests
# are queued on their rows (priority ``expired``, oldest ``stale_after`` first) instead of
# written to the outbox; the scheduler publishes them within the budget.
EXPIRE_QUEUE_CHUNK = text(
    _PICK_EXPIRED
    + """
), marked AS (
    UPDATE user_profile_highlights h SET
        generation = h.generation + 1, is_stale = true, stale_since = :now,
        stale_reason = 'expired', updated_at = :now, covered_fingerprint = NULL,
        regen_queued_at = CASE WHEN p.ask THEN :now ELSE h.regen_queued_at END,
        regen_first_change_at = CASE WHEN p.ask THEN coalesce(h.stale_after, :now)
            ELSE h.regen_first_change_at END,
        regen_last_change_at = CASE WHEN p.ask THEN :now ELSE h.regen_last_change_at END,
        regen_priority = CASE WHEN p.ask THEN """
    + str(int(Priority.EXPIRED))
    + """ ELSE h.regen_priority END,
        regen_queued_reason = CASE WHEN p.ask THEN 'expired' ELSE h.regen_queued_reason END,
        regen_queued_trigger = CASE WHEN p.ask THEN 'sweep' ELSE h.regen_queued_trigger END,
        regen_unseen = CASE WHEN p.ask THEN 0 ELSE h.regen_unseen END
    FROM picked p WHERE h.ctid = p.tid
    RETURNING h.user_id, p.ask
)
SELECT (SELECT max(user_id) FROM marked), (SELECT count(*) FROM marked),
       (SELECT count(*) FILTER (WHERE ask) FROM marked)
"""
)
