"""The decision engine: pure functions of results, overrides and a clock.

results -> health -> desired state -> Plan -> guardrails. No I/O: nothing here
imports the store, the runtime, actuators, probes or the web app.
"""
