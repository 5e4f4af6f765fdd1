-- The tables and hand-written triggers of `tocsin bench capture`, created in a scratch
-- database. Every mode writes to its own table of the same shape: a comment on a portfolio.
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['bench_none', 'bench_trigger', 'bench_trigger_sequencer',
                             'bench_capture_off', 'bench_naive', 'bench_notify'] LOOP
        EXECUTE format($f$
            CREATE TABLE %I (
                id           bigserial   PRIMARY KEY,
                portfolio_id bigint      NOT NULL,
                owner_id     text        NOT NULL,
                body         text        NOT NULL,
                status       text        NOT NULL,
                created_at   timestamptz NOT NULL DEFAULT now()
            )$f$, t);
    END LOOP;
END
$$;

-- naive-to_jsonb: the outbox trigger one writes first, whole row as jsonb.
CREATE TABLE bench_naive_outbox (
    id         bigserial   PRIMARY KEY,
    payload    jsonb       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION bench_naive_capture() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO bench_naive_outbox (payload) VALUES (to_jsonb(NEW));
    RETURN NULL;
END
$$;

CREATE TRIGGER bench_naive AFTER INSERT ON bench_naive
FOR EACH ROW EXECUTE FUNCTION bench_naive_capture();

-- notify: a NOTIFY per row, the design Tocsin rejects for the write path.
CREATE FUNCTION bench_notify_capture() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('tocsin_bench', NEW.id::text);
    RETURN NULL;
END
$$;

CREATE TRIGGER bench_notify AFTER INSERT ON bench_notify
FOR EACH ROW EXECUTE FUNCTION bench_notify_capture();
