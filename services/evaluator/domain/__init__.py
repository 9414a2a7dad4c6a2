"""The evaluator's pure logic: metrics, paired statistics, the promotion policy, the rollout rules and
the report. No Kafka, no HTTP, no files: arrays and plain records in, decisions out."""
