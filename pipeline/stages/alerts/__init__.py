"""Alert rules evaluated on zone and line analytics (`rules.RuleEngine`)."""
