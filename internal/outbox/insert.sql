-- The one Go insert into tocsin.outbox: one statement for any number of rows, which take
-- ids in the order given ($1 … $12 are parallel text arrays, one element per row).
-- changed arrives as a JSON array of strings; group_by, when set, is a JSON array whose
-- jsonb text form becomes group_key, exactly as a route trigger's jsonb_build_array(…)::text.
-- A row whose route, operation, topic, kind and table are a registered tocsin.route_op is
-- written as a trigger writes it: that id instead of the five values (the sequencer fills
-- them back in).
INSERT INTO tocsin.outbox (recipient, route, topic, kind, op, table_name, key, data, old, changed, group_key, route_op)
SELECT u.recipient,
       CASE WHEN r.id IS NULL THEN u.route END, CASE WHEN r.id IS NULL THEN u.topic END,
       CASE WHEN r.id IS NULL THEN u.kind END, CASE WHEN r.id IS NULL THEN u.op END,
       CASE WHEN r.id IS NULL THEN u.table_name END,
       u.key::jsonb, u.data::jsonb, u.old::jsonb,
       CASE WHEN u.changed IS NOT NULL THEN ARRAY(SELECT jsonb_array_elements_text(u.changed::jsonb)) END,
       coalesce(u.group_by::jsonb::text, u.group_key),
       r.id
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
            $8::text[], $9::text[], $10::text[], $11::text[], $12::text[])
     WITH ORDINALITY AS u(recipient, route, topic, kind, op, table_name, key, data, old, changed,
                          group_key, group_by, ord)
     LEFT JOIN tocsin.route_op r
            ON r.route = u.route AND r.op = u.op AND r.topic = u.topic AND r.kind = u.kind
           AND r.table_name = u.table_name
ORDER BY u.ord
