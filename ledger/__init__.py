"""Consortium ledger: chain backends, contract wrapper, durable outbox, auditor queries."""
