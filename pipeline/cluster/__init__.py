"""A fleet of instances sharing cameras through leases in PostgreSQL (`runtime.cluster`): see docs/SCALING.md.

    assignment   which instance should run which camera (weighted rendezvous hashing, capacities)
    store        the fleet_* tables and every statement on them
    coordinator  the thread of one instance: heartbeats, leases, claims, rebalancing, the local deadline
    fencing      stored rows are refused once the lease they were produced under has ended
    cameras      the fleet's cameras as the API and `fleet import` change them
    analytics    the fleet's zones, lines and alert rules: validated whole, changed in one transaction
    api, cli     GET /api/cluster with the cluster's metrics; `run_pipeline.py fleet import|list`
"""
