"""Events out: the envelope of business facts, the broker, the relay from the outbox."""
