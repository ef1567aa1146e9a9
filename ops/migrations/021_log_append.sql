-- The embedded log's append, in one statement (streams/embedded.py, docs/design.md).
--
-- A group of records for one topic goes in with one call, in autocommit: the call is
-- its own transaction, so a group costs one round trip and one commit, where it cost
-- BEGIN, an UPDATE and a COPY per partition, a NOTIFY per partition and COMMIT.
--
-- p_parts, p_keys, p_values and p_headers are parallel arrays, one element per record,
-- in the order the records were handed in. The result is each record's offset, in the
-- same order. Within a partition, records get consecutive offsets in input order.
--
-- The head rows are locked in partition order (one UPDATE per partition, sorted), so
-- two appenders never deadlock; each head row stays locked until the commit, so a
-- partition's appends commit in offset order and a reader never sees a later offset
-- before an earlier one. The NOTIFY for each partition is delivered on commit.
CREATE OR REPLACE FUNCTION log_append(
    p_topic text, p_parts int[], p_keys bytea[], p_values bytea[], p_headers bytea[]
) RETURNS bigint[] LANGUAGE plpgsql AS $$
DECLARE
    c record;
    new_head bigint;
    locked_parts int[] := '{}';
    bases bigint[] := '{}';
    offsets bigint[];
BEGIN
    FOR c IN
        SELECT u.part, count(*) AS n FROM unnest(p_parts) AS u(part)
         GROUP BY u.part ORDER BY u.part
    LOOP
        UPDATE log_heads SET next_offset = next_offset + c.n
         WHERE topic = p_topic AND partition = c.part
        RETURNING next_offset INTO new_head;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'topic % partition % has no head row', p_topic, c.part
                USING ERRCODE = 'no_data_found';
        END IF;
        locked_parts := locked_parts || c.part;
        bases := bases || (new_head - c.n);
        PERFORM pg_notify('mgw_log', c.part || ':' || new_head || ':' || p_topic);
    END LOOP;

    WITH numbered AS (
        SELECT u.ord, u.part, u.k, u.v, u.h,
               b.base + row_number() OVER (PARTITION BY u.part ORDER BY u.ord) - 1 AS off
          FROM unnest(p_parts, p_keys, p_values, p_headers)
               WITH ORDINALITY AS u(part, k, v, h, ord)
          JOIN unnest(locked_parts, bases) AS b(part, base) ON b.part = u.part
    ), inserted AS (
        INSERT INTO log_records (topic, partition, "offset", key, value, headers)
        SELECT p_topic, part, off, k, v, h FROM numbered
    )
    SELECT array_agg(off ORDER BY ord) INTO offsets FROM numbered;
    RETURN offsets;
END $$;
