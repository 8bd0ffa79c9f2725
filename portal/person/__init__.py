"""What a person does: a lookup, its link, the session, its addresses, results, rate limits."""
