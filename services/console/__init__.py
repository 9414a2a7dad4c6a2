"""Ferry's web console: what the other services know, on pages a person reads, and the operator's actions.

A service of its own rather than pages of the registry: it reads five sources (the registry, the
monitor, the evaluator, the gateways and Kafka's dead-letter and training topics) and writes nothing
of its own, so the system of record stays small, and the console scales, fails and restarts on its
own. It never holds a write credential for the registry: an action carries the operator's own bearer
token, which the console forwards unchanged and the registry checks.
"""
