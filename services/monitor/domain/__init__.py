"""The monitor's pure logic: rules, the series window, rule evaluation, drift and the alert lifecycle.

Nothing here does I/O: the engine (``services.monitor.service``) feeds it scrapes and a clock.
"""
