-- The one Go insert into tocsin.outbox: one statement for any number of rows, which take
-- ids in the order given ($1 … $11 are parallel text arrays, one element per row).
-- changed arrives as a JSON array of strings; group_by, when set, is a JSON array whose
-- jsonb text form becomes group_key, exactly as a route trigger's jsonb_build_array(…)::text.
INSERT INTO tocsin.outbox (recipient, route, topic, kind, op, table_name, key, data, old, changed, group_key)
SELECT u.recipient, u.route, u.topic, u.kind, u.op, u.table_name, u.key::jsonb, u.data::jsonb, u.old::jsonb,
       CASE WHEN u.changed IS NOT NULL THEN ARRAY(SELECT jsonb_array_elements_text(u.changed::jsonb)) END,
       coalesce(u.group_by::jsonb::text, u.group_key)
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
            $8::text[], $9::text[], $10::text[], $11::text[], $12::text[])
     WITH ORDINALITY AS u(recipient, route, topic, kind, op, table_name, key, data, old, changed,
                          group_key, group_by, ord)
ORDER BY u.ord
