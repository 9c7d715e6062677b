"""Helpers of scripts/reliability.py: processes, Kafka reads, the TCP proxy
that simulates a database outage, and the per-order count."""
