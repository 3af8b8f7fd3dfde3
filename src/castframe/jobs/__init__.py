"""The domain: accounts and keys, job submission and lifecycle, the credit ledger."""
