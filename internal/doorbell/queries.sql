-- The doorbell's SQL. The channel is doorbell.Channel; tocsin.sequence_batch NOTIFYs it.

-- name: doorbell_listen
LISTEN tocsin_doorbell;
