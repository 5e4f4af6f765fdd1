-- Tocsin's schema. River's tables are created in it next (rivermigrate), then the rest.
CREATE SCHEMA IF NOT EXISTS tocsin;
