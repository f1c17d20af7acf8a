"""The fleet's tables in PostgreSQL (`pipeline.cluster.store` has every statement on them and their columns).
Run at every connect under an advisory lock; it creates or upgrades only what is missing, so it never waits on
another instance's open transaction."""

SCHEMA = """
CREATE SEQUENCE IF NOT EXISTS fleet_lease_token;
CREATE SEQUENCE IF NOT EXISTS fleet_camera_revision;
CREATE TABLE IF NOT EXISTS fleet_cameras (
    id text PRIMARY KEY, entry jsonb NOT NULL, revision bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS fleet_instances (
    name text PRIMARY KEY, capacity integer NOT NULL, normal_cap integer NOT NULL, weight double precision NOT NULL, url text,
    process text NOT NULL DEFAULT '', started_at timestamptz NOT NULL DEFAULT now(), heartbeat_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS fleet_leases (
    camera_id text PRIMARY KEY REFERENCES fleet_cameras (id) ON DELETE CASCADE, instance text NOT NULL,
    token bigint NOT NULL UNIQUE, acquired_at timestamptz NOT NULL, expires_at timestamptz NOT NULL);
CREATE TABLE IF NOT EXISTS fleet_handoffs (
    id bigserial PRIMARY KEY, camera_id text NOT NULL, from_instance text NOT NULL, from_token bigint NOT NULL,
    from_acquired_at timestamptz NOT NULL,
    to_instance text, to_token bigint, reason text NOT NULL, lease_ended_at timestamptz NOT NULL,
    started_at timestamptz, gap_s double precision);
CREATE TABLE IF NOT EXISTS fleet_analytics (
    section text NOT NULL, name text NOT NULL, entry jsonb NOT NULL, position bigserial,
    updated_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (section, name));
CREATE TABLE IF NOT EXISTS fleet_analytics_version (
    one boolean PRIMARY KEY DEFAULT true CHECK (one), version bigint NOT NULL);
-- Only what is missing: ALTER TABLE and CREATE INDEX lock their table even when the column or index is there, and
-- an insert that conflicts waits for a transaction changing that row, so one instance frozen in the middle of a
-- heartbeat, claim or zone edit would hold every other instance's start back.
DO $$ BEGIN
    IF NOT EXISTS (SELECT FROM information_schema.columns WHERE table_schema = current_schema()
                   AND table_name = 'fleet_instances' AND column_name = 'lanes') THEN
        ALTER TABLE fleet_instances ADD COLUMN lanes text[];
    END IF;
    IF NOT EXISTS (SELECT FROM information_schema.columns WHERE table_schema = current_schema()
                   AND table_name = 'fleet_instances' AND column_name = 'lease_s') THEN
        ALTER TABLE fleet_instances ADD COLUMN lease_s double precision;
    END IF;
    IF to_regclass('fleet_handoffs_token') IS NULL THEN
        CREATE INDEX fleet_handoffs_token ON fleet_handoffs (from_token);
    END IF;
    IF to_regclass('fleet_handoffs_camera') IS NULL THEN
        CREATE INDEX fleet_handoffs_camera ON fleet_handoffs (camera_id, id);
    END IF;
    IF to_regclass('fleet_handoffs_from') IS NULL THEN
        CREATE INDEX fleet_handoffs_from ON fleet_handoffs (from_instance, camera_id, lease_ended_at);
    END IF;
    IF to_regclass('fleet_handoffs_ended') IS NULL THEN
        CREATE INDEX fleet_handoffs_ended ON fleet_handoffs (lease_ended_at);
    END IF;
    IF NOT EXISTS (SELECT FROM fleet_analytics_version) THEN
        INSERT INTO fleet_analytics_version (version) VALUES (0);
    END IF;
END $$;
"""
